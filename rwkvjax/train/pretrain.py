"""Train every weight of an RWKV-7 from scratch with the project's own forward (byte or World vocab).

AdamW with the RWKV conventions (weight decay only on 2-D weight matrices, `w0` at twice the LR),
linear warmup then cosine decay, held-out bits per byte logged, orbax checkpoints, exact resume.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from rwkvjax.io.checkpoint import abstract, checkpoint_manager
from rwkvjax.io.convert import save_official
from rwkvjax.model.init import init_params
from rwkvjax.model.rwkv7 import forward
from rwkvjax.model.state import zero_state
from rwkvjax.train.config import PretrainConfig
from rwkvjax.train.corpus import build_corpus
from rwkvjax.train.optim import Group, make_optimizer

_DECAYED = {"emb", "head", "W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value"}


def _lr_mask(params):
    """Weight decay only on the `.weight` matrices, as BlinkDL's trainer (not on LoRAs, vectors, norms)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].name in _DECAYED, params)


def pretrain_optimizer(cfg: PretrainConfig):
    """AdamW, weight decay on the weight matrices only, `w0` at twice the LR (BlinkDL's RWKV-LM recipe)."""
    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: "w0" if p[-1].name == "w0" else "rest", params)

    warm = min(cfg.warmup, cfg.steps // 2)
    g = lambda scale: Group(scale * cfg.lr, scale * cfg.lr_final, warm, weight_decay=cfg.weight_decay,
                            decay_mask=_lr_mask)
    return make_optimizer(labels, {"rest": g(1.0), "w0": g(2.0)}, decay_steps=max(cfg.steps, warm + 1),
                          clip_norm=1.0)


def _loss(params, tokens_BT1, config, wkv_impl):
    x, y = tokens_BT1[:, :-1], tokens_BT1[:, 1:]
    logits, _ = forward(params, x, zero_state(config, x.shape[0]), config=config, wkv_impl=wkv_impl, remat=True)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _sample(ids: np.ndarray, rng: np.random.Generator, batch: int, T: int) -> np.ndarray:
    starts = rng.integers(0, ids.size - T - 1, size=batch)
    return np.stack([ids[s:s + T + 1] for s in starts])


def _bytes_per_token(ids: np.ndarray, tokenizer) -> float:
    if tokenizer.vocab_size == 256:
        return 1.0
    sample = ids[: 1_000_000].tolist()
    return len(tokenizer.decode_bytes(sample)) / len(sample)


def pretrain(cfg: PretrainConfig, *, log=print) -> dict:
    from rwkvjax.text.tokenizer import for_vocab
    config = cfg.model_config()
    tok = for_vocab(config.vocab_size)
    train_ids, held_ids, cstats = build_corpus(cfg, tok)
    bpt = _bytes_per_token(held_ids, tok)
    out = Path(cfg.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps({"pretrain_config": dataclasses.asdict(cfg),
                                                 "model_config": dataclasses.asdict(config), "corpus": cstats},
                                                indent=1))
    tx = pretrain_optimizer(cfg)
    params = init_params(config, cfg.seed)
    opt_state = tx.init(params)
    rng = np.random.default_rng(cfg.seed)
    mngr = checkpoint_manager(out / "ckpt", keep=2)
    step = 0
    if mngr.latest_step() is not None:
        r = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(params)), opt=ocp.args.StandardRestore(abstract(opt_state)),
            host=ocp.args.JsonRestore()))
        params, opt_state, step = r.params, r.opt, r.host["step"]
        rng.bit_generator.state = r.host["rng"]
        log(f"resumed at step {step}")

    loss_fn = functools.partial(_loss, config=config, wkv_impl=cfg.wkv_impl)

    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_loss = jax.jit(loss_fn)
    eval_rng = np.random.default_rng(12345)
    eval_batches = [_sample(held_ids, eval_rng, cfg.batch, cfg.ctx_len) for _ in range(cfg.eval_batches)]
    metrics_path = out / "metrics.jsonl"
    t0, tokens = time.perf_counter(), 0
    rec = {}
    while step < cfg.steps:
        batch = jnp.asarray(_sample(train_ids, rng, cfg.batch, cfg.ctx_len))
        params, opt_state, loss = train_step(params, opt_state, batch)
        step += 1
        tokens += cfg.batch * cfg.ctx_len
        if step % cfg.eval_every == 0 or step == cfg.steps:
            held = float(np.mean([float(eval_loss(params, jnp.asarray(b))) for b in eval_batches]))
            el = time.perf_counter() - t0
            rec = {"step": step, "train_loss": float(loss), "heldout_bits_per_byte": held / math.log(2) / bpt,
                   "tokens_per_s": tokens / el, "time": time.time()}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(json.dumps(rec))
        if step % cfg.save_every == 0 or step == cfg.steps:
            mngr.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), opt=ocp.args.StandardSave(opt_state),
                host=ocp.args.JsonSave({"step": step, "rng": rng.bit_generator.state})))
    mngr.wait_until_finished()
    mngr.close()
    model_path = save_official(params, config, out / "model.safetensors", "bf16")
    return {"model": model_path, "step": step, **rec, "corpus": cstats}
