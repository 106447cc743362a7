"""Train every weight of an RWKV-7 from scratch with the project's own forward (byte or World vocab).

AdamW with the RWKV conventions (weight decay only on 2-D weight matrices, `w0` at twice the LR),
linear warmup then cosine decay, held-out bits per byte logged, orbax checkpoints, exact resume.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from rwkvjax.config import Config
from rwkvjax.init import init_params
from rwkvjax.model import forward
from rwkvjax.params import to_official
from rwkvjax.run_config import PretrainConfig
from rwkvjax.state import zero_state

TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".c", ".h", ".sh", ".toml", ".cfg", ".json", ".html", ".css", ".js"}


def corpus_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES
                         and "site-packages" not in f.parts)
        else:
            raise FileNotFoundError(f"--corpus {p}: no such file or folder")
    return sorted(set(files))


def _is_heldout(path: Path, k: int) -> bool:
    return int(hashlib.sha256(str(path).encode()).hexdigest(), 16) % k == 0


def read_text_files(files, stats: dict):
    """Yield (path, raw bytes, text) for every UTF-8 file; others (NUL bytes, bad UTF-8) count in stats['skipped_binary']."""
    for f in files:
        raw = f.read_bytes()
        if b"\0" in raw:
            stats["skipped_binary"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["skipped_binary"] += 1
            continue
        yield f, raw, text


def build_corpus(cfg: PretrainConfig, tokenizer) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train ids, held-out ids, summary). Files that are not UTF-8 text are skipped and counted."""
    train, held, stats = [], [], {"files": 0, "skipped_binary": 0, "bytes": 0}
    for f, raw, text in read_text_files(corpus_files(cfg.corpus), stats):
        ids = tokenizer.encode(text) + [0]  # 0 separates documents
        (held if _is_heldout(f, cfg.heldout_every) else train).append(np.asarray(ids, np.int32))
        stats["files"] += 1
        stats["bytes"] += len(raw)
        if stats["bytes"] >= cfg.max_bytes:
            break
    if not train or not held:
        raise ValueError(f"--corpus {list(cfg.corpus)}: found no usable text files for both splits")
    tr, he = np.concatenate(train), np.concatenate(held)
    stats.update(train_tokens=int(tr.size), heldout_tokens=int(he.size))
    return tr, he, stats


_DECAYED = {"emb", "head", "W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value"}


def _lr_mask(params):
    """Weight decay only on the `.weight` matrices, as BlinkDL's trainer (not on LoRAs, vectors, norms)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: p[-1].name in _DECAYED, params)


def make_optimizer(cfg: PretrainConfig):
    warm = min(cfg.warmup, cfg.steps // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warm, max(cfg.steps, warm + 1), end_value=cfg.lr_final)

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: "w0" if p[-1].name == "w0" else "rest", params)

    adam = lambda s: optax.adamw(s, b1=0.9, b2=0.99, eps=1e-8, weight_decay=cfg.weight_decay, mask=_lr_mask)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.partition({"rest": adam(sched), "w0": adam(lambda c: 2 * sched(c))}, labels))


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
    from rwkvjax.tokenizer import for_vocab
    config = cfg.model_config()
    tok = for_vocab(config.vocab_size)
    train_ids, held_ids, cstats = build_corpus(cfg, tok)
    bpt = _bytes_per_token(held_ids, tok)
    out = Path(cfg.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps({"pretrain_config": dataclasses.asdict(cfg),
                                                 "model_config": dataclasses.asdict(config), "corpus": cstats},
                                                indent=1))
    tx = make_optimizer(cfg)
    params = init_params(config, cfg.seed)
    opt_state = tx.init(params)
    rng = np.random.default_rng(cfg.seed)
    mngr = ocp.CheckpointManager(out / "ckpt", options=ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(2), create=True))
    step = 0
    if mngr.latest_step() is not None:
        abstract = lambda t: jax.tree.map(ocp.utils.to_shape_dtype_struct, t)
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
    model_path = export(params, config, out / "model.safetensors")
    return {"model": model_path, "step": step, **rec, "corpus": cstats}


def export(params, config: Config, path: Path) -> str:
    """bf16 safetensors with official names (loadable by `rwkvjax.load` and convertible to `.pth`)."""
    from safetensors.flax import save_file
    tensors = {k: jnp.asarray(np.ascontiguousarray(v), jnp.bfloat16)
               for k, v in to_official(jax.device_get(params), config).items()}
    save_file(tensors, str(path), metadata={"format": "rwkv7-official-names",
                                            "config": json.dumps(dataclasses.asdict(config))})
    return str(path)
