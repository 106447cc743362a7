"""Train every weight of an RWKV-7 from scratch with the project's own forward (byte or World vocab).

Truncated BPTT: each batch row reads a segment of `windows_per_segment` consecutive windows with the
recurrent state carried from one window to the next (no gradient through the carry), so the model learns
to use up to ctx_len x windows_per_segment tokens of context. A share of segments (`copy_prob`) repeat a
chunk of real text later in the segment, which teaches copying from context. AdamW with the RWKV
conventions (weight decay only on the weight matrices, `w0` at twice the LR), warmup then cosine decay,
held-out bits per byte with the state carried through each held-out file, orbax checkpoints at segment
boundaries (exact resume), and the model exported at every checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rwkvjax.atomic import atomic_write
from rwkvjax.errors import CheckpointMismatch, ConfigError
from rwkvjax.io.checkpoint import abstract, checkpoint_manager
from rwkvjax.io.convert import save_official
from rwkvjax.io.lock import LOCK_NAME, RunLock
from rwkvjax.model.init import init_params
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits
from rwkvjax.model.state import zero_state
from rwkvjax.model.units import LN2
from rwkvjax.train.config import PretrainConfig
from rwkvjax.train.corpus import build_corpus, default_roots
from rwkvjax.train.hooks import repair_torn_tail
from rwkvjax.train.objective import HEAD_CHUNK, _chunked_nll
from rwkvjax.train.optim import Group, make_optimizer
from rwkvjax.train.signals import StopSignals
from rwkvjax.train.step import data_mesh

_DECAYED = {"emb", "head", "W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value"}
# settings a resumed run must keep (the rest, e.g. steps, lr or eval cadence, may change)
FIXED = ("vocab", "n_layer", "n_embd", "ctx_len", "windows_per_segment", "batch", "seed", "corpus",
         "heldout_every", "heldout_packages", "max_file_bytes", "max_bytes")


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


# ----- data -----

def segment_batch(stream: np.ndarray, rng: np.random.Generator, batch: int, seg_len: int,
                  copy_prob: float, copy_noise: float = 0.0) -> np.ndarray:
    """[batch, seg_len + 1] token rows: contiguous text, or (with probability copy_prob) a chunk, other text,
    then the same chunk again. Chunk and gap lengths are log-uniform (16 .. seg_len / 2), so most copies fit
    one window (where the gradient reaches the write) and some span many (where the state must hold them).
    A chunk is real text, or (with probability copy_noise) tokens drawn one by one from the stream: text's
    unigram statistics with nothing to predict them by except the earlier copy."""
    n = stream.size
    take = lambda length: stream[(s := int(rng.integers(0, n - length))):s + length]
    log_uniform = lambda lo, hi: int(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo + 1)))))
    rows = []
    for _ in range(batch):
        if rng.random() < copy_prob and seg_len >= 128:
            size = log_uniform(16, seg_len // 2)
            chunk = stream[rng.integers(0, n, size)] if rng.random() < copy_noise else take(size)
            gap = take(min(log_uniform(1, seg_len // 2), seg_len + 1 - 2 * chunk.size))
            tail = take(seg_len + 1 - 2 * chunk.size - gap.size) if seg_len + 1 > 2 * chunk.size + gap.size else \
                stream[:0]
            rows.append(np.concatenate([chunk, gap, chunk, tail]))
        else:
            rows.append(take(seg_len + 1))
    return np.stack(rows).astype(np.int32)


def _eval_rows(docs, T: int, budget: int, per_file: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Held-out files (at most `per_file` tokens each, `budget` in all) as padded rows, with a mask."""
    rows, total = [], 0
    for _, ids in docs:
        ids = ids[: min(max(budget - total, 0), per_file)]
        if ids.size < 2:
            break
        rows.append(ids)
        total += ids.size
    L = -(-max(r.size for r in rows) // T) * T
    x = np.zeros((len(rows), L + 1), np.int32)
    mask = np.zeros((len(rows), L), np.float32)
    for i, r in enumerate(rows):
        x[i, 1:r.size + 1] = r   # input 0 (separator) then the file; every byte of it is a target
        mask[i, :r.size] = 1.0
    return x, mask


def _copy_rows(docs, n: int = 4, length: int = 1024) -> np.ndarray | None:
    """Rows [0, X, X] from held-out text: the cost of the second copy measures copying from context."""
    chunks = [ids[:length] for _, ids in docs if ids.size >= length][:n]
    if not chunks:
        return None
    return np.stack([np.concatenate([[0], c, c]) for c in chunks]).astype(np.int32)


# ----- the step -----

def _nll(params, state, x_BT, y_BT, *, config, wkv_impl, remat):
    hidden, state = forward_hidden(params, embed(params, x_BT), state, config=config, wkv_impl=wkv_impl,
                                   remat=remat)
    nll = _chunked_nll(lambda h, _: head_logits(params, h), hidden, y_BT, None, min(HEAD_CHUNK, x_BT.shape[1]))
    return nll, state


def make_steps(config, tx, cfg: PretrainConfig):
    nll_fn = functools.partial(_nll, config=config, wkv_impl=cfg.wkv_impl, remat=cfg.remat)

    def loss_fn(params, state, x, y):
        nll, state = nll_fn(params, state, x, y)
        return jnp.mean(nll), state

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, opt_state, state, x, y):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jax.lax.stop_gradient(state), loss

    @jax.jit
    def eval_window(params, state, x, y, mask):
        nll, state = nll_fn(params, state, x, y)
        return nll * mask / LN2, state

    return train_step, eval_window


def _scored_bits(eval_window, params, config, x, mask, T: int) -> np.ndarray:
    """Bits per position [rows, L] of padded rows (x has L + 1 columns), window by window, state carried."""
    state = zero_state(config, x.shape[0])
    L = mask.shape[1]
    x = np.pad(x, ((0, 0), (0, -L % T)))
    mask = np.pad(mask, ((0, 0), (0, -L % T)))
    out = []
    for s in range(0, mask.shape[1], T):
        bits, state = eval_window(params, state, jnp.asarray(x[:, s:s + T]), jnp.asarray(x[:, s + 1:s + T + 1]),
                                  jnp.asarray(mask[:, s:s + T]))
        out.append(np.asarray(bits))
    return np.concatenate(out, axis=1)[:, :L]


# ----- the run -----

def _check_resume(out: Path, cfg: PretrainConfig) -> None:
    recipe = out / "recipe.json"
    if not recipe.is_file() or not (out / "ckpt").is_dir():
        return
    old = json.loads(recipe.read_text()).get("pretrain_config", {})
    for k in FIXED:
        mine = list(getattr(cfg, k)) if isinstance(getattr(cfg, k), tuple) else getattr(cfg, k)
        if k in old and old[k] != mine:
            raise CheckpointMismatch(f"{out}: setting {k}={mine!r} differs from the run in this folder "
                                     f"({old[k]!r}); keep it to resume, or use another --out")


def _installed_packages() -> list[str]:
    from importlib.metadata import distributions
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())


def pretrain(cfg: PretrainConfig, *, log=print) -> dict:
    """Train (or resume training) the model of `cfg.out`, which is held locked for the run (`io.lock`)."""
    if not cfg.corpus:
        cfg = dataclasses.replace(cfg, corpus=tuple(default_roots()))
    out = Path(cfg.out).absolute()
    _check_resume(out, cfg)
    made = not out.exists()
    try:
        with RunLock(out, "pretrain"):
            return _pretrain(cfg, out, log)
    finally:
        if made and not any(p.name != LOCK_NAME for p in out.iterdir()):
            shutil.rmtree(out)  # refused before anything was written (e.g. a bad --init-from): leave no folder


def _pretrain(cfg: PretrainConfig, out: Path, log) -> dict:
    from rwkvjax.text.tokenizer import for_vocab
    config = cfg.model_config()
    tok = for_vocab(config.vocab_size)
    t_build = time.perf_counter()
    stream, held_docs, cstats = build_corpus(cfg, tok)
    log(f"corpus: {cstats['train_files']} training files ({cstats['train_tokens']} tokens), "
        f"{cstats['heldout_files']} held-out files in {len(cstats['heldout_packages'])} packages, "
        f"{time.perf_counter() - t_build:.0f} s")
    tx = pretrain_optimizer(cfg)
    params = init_params(config, cfg.seed)
    if cfg.init_from:
        from rwkvjax.io.formats import load
        init_config, params = load(cfg.init_from)
        if init_config != config:
            raise CheckpointMismatch(f"--init-from {cfg.init_from}: its shape {init_config} differs from "
                                     f"--vocab/--n-layer/--n-embd ({config})")
    opt_state = tx.init(params)
    # every check has passed: only now is anything in the folder written
    recipe = {"pretrain_config": dataclasses.asdict(cfg), "model_config": dataclasses.asdict(config),
              "corpus": cstats, "python": platform.python_version(), "installed_packages": _installed_packages()}
    atomic_write(out / "recipe.json", json.dumps(recipe, indent=1).encode(), private=False)
    rng = np.random.default_rng(cfg.seed)
    mngr = checkpoint_manager(out / "ckpt", keep=2)
    step, resumed_segment = 0, None
    if mngr.latest_step() is not None:
        seg_like = {"seg": np.zeros((cfg.batch, cfg.ctx_len * cfg.windows_per_segment + 1), np.int32),
                    "state": zero_state(config, cfg.batch)}
        r = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(params)), opt=ocp.args.StandardRestore(abstract(opt_state)),
            host=ocp.args.JsonRestore(),
            **({"segment": ocp.args.StandardRestore(abstract(seg_like))}
               if "segment" in mngr.item_metadata(mngr.latest_step()) else {})))
        params, opt_state, step = r.params, r.opt, r.host["step"]
        rng.bit_generator.state = r.host["rng"]
        if r.host.get("mid_segment"):
            resumed_segment = r.segment
        log(f"resumed at step {step}" + (" (inside a segment: its carried state restored)" if resumed_segment
                                         else ""))

    T, K = cfg.ctx_len, cfg.windows_per_segment
    train_step, eval_window = make_steps(config, tx, cfg)
    # data parallel over the local devices (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 on a
    # 2-core CPU: two XLA devices keep both cores busy, measured in benchmarks/RESULTS.md)
    mesh = data_mesh()
    n_dev = len(mesh.local_devices)
    if cfg.batch % n_dev:
        raise ConfigError(f"--batch {cfg.batch} does not divide over the {n_dev} local devices")
    rows = lambda a: jax.device_put(a, NamedSharding(mesh, P("data", *([None] * (np.ndim(a) - 1)))))
    state_rows = lambda st: jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P(None, "data"))), st)
    params = jax.device_put(params, NamedSharding(mesh, P()))
    opt_state = jax.device_put(opt_state, NamedSharding(mesh, P()))
    eval_x, eval_mask = _eval_rows(held_docs, T, cfg.eval_bytes)
    copy_x = _copy_rows(held_docs)
    eval_bytes = sum(len(tok.decode_bytes(row[1:int(m.sum()) + 1].tolist())) for row, m in zip(eval_x, eval_mask))

    def evaluate() -> dict:
        bits = _scored_bits(eval_window, params, config, eval_x, eval_mask, T)
        rec = {"heldout_bits_per_token": float(bits.sum() / eval_mask.sum()),
               "heldout_bits_per_byte": float(bits.sum() / eval_bytes)}
        if copy_x is not None:
            n = (copy_x.shape[1] - 1) // 2
            cmask = np.ones((copy_x.shape[0], copy_x.shape[1] - 1), np.float32)
            cb = _scored_bits(eval_window, params, config, copy_x, cmask, T)
            rec["copy_first_bits_per_token"] = float(cb[:, :n].mean())
            rec["copy_second_bits_per_token"] = float(cb[:, n:].mean())
        return rec

    def save(mid_segment: bool = False):
        """A step; stopped inside a segment (Ctrl-C), the segment and its carried state go with it, so the
        resumed run continues exactly where this one stopped."""
        extra = {"segment": ocp.args.StandardSave({"seg": seg, "state": jax.device_get(state)})} if mid_segment \
            else {}
        mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt=ocp.args.StandardSave(opt_state),
            host=ocp.args.JsonSave({"step": step, "rng": rng.bit_generator.state, "mid_segment": mid_segment}),
            **extra))
        mngr.wait_until_finished()
        save_official(params, config, out / "model.safetensors", "bf16",
                      {"pretrain_step": str(step), "recipe": "recipe.json"})

    metrics_path = out / "metrics.jsonl"
    repair_torn_tail(metrics_path)
    t0, tokens, rec, loss = time.perf_counter(), 0, {}, None
    state, seg = None, None
    if resumed_segment is not None:
        seg, state = np.asarray(resumed_segment["seg"]), state_rows(resumed_segment["state"])
    losses = []
    saved = step
    with StopSignals() as signals:  # Ctrl-C/SIGTERM: the step in flight finishes, then everything is saved
        while step < cfg.steps and not signals.event.is_set():
            w = step % K
            if w == 0 or seg is None:
                seg = segment_batch(stream, rng, cfg.batch, T * K, cfg.copy_prob, cfg.copy_noise)
                state = state_rows(zero_state(config, cfg.batch))
            x, y = rows(seg[:, w * T:(w + 1) * T]), rows(seg[:, w * T + 1:(w + 1) * T + 1])
            params, opt_state, state, loss = train_step(params, opt_state, state, x, y)
            losses.append(loss)
            step += 1
            tokens += cfg.batch * T
            at_boundary = step % K == 0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                el = time.perf_counter() - t0
                rec = {"step": step, "train_loss": float(np.mean([float(v) for v in losses])),
                       "tokens_per_s": tokens / el, "tokens_seen": step * cfg.batch * T, **evaluate(),
                       "time": time.time()}
                losses = []
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                log(json.dumps(rec))
            # periodic checkpoints at segment boundaries: a resumed run draws a fresh segment, as this one would
            if (at_boundary and (step // K) % max(cfg.save_every // K, 1) == 0) or step == cfg.steps:
                save()
                saved = step
        if step != saved:  # stopped by a signal between checkpoints
            save(mid_segment=step % K != 0)
            log(f"stopped at step {step}: saved")
    mngr.wait_until_finished()
    mngr.close()
    signals.raise_if_stopped()
    return {"model": str(out / "model.safetensors"), "step": step, **rec,
            "corpus": {k: v for k, v in cstats.items() if k != "heldout_packages"}}
