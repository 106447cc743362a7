"""Train every weight of an RWKV-7 from scratch with the project's own forward (byte or World vocab).

Truncated BPTT: each batch row reads a segment of `windows_per_segment` consecutive windows with the
recurrent state carried from one window to the next (no gradient through the carry), so the model learns
to use up to ctx_len x windows_per_segment tokens of context. A share of segments (`copy_prob`) repeat a
chunk of real text later in the segment, which teaches copying from context. AdamW with the RWKV
conventions (weight decay only on the weight matrices, `w0` at twice the LR), warmup then cosine decay,
held-out bits per byte with the state carried through each held-out file, checkpoints at segment
boundaries (exact resume), and the model exported at every checkpoint.

The run is `train_loop` with a `SegmentLearner` and hooks, as `train`'s: `TrainCheckpointer` steps (a damaged
step is moved aside and the one before it used; a save the disk cannot hold stops the run with one line),
`metrics.jsonl` through `MetricsLog` (a torn last line is cut off), Ctrl-C/SIGTERM through `StopSignals`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rwkvjax.atomic import atomic_write
from rwkvjax.errors import CheckpointMismatch, ConfigError
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.io.convert import save_official
from rwkvjax.io.lock import LOCK_NAME, RunLock
from rwkvjax.model.init import init_params
from rwkvjax.model.state import zero_state
from rwkvjax.model.units import LN2
from rwkvjax.train.config import PretrainConfig
from rwkvjax.train.corpus import build_corpus, default_roots
from rwkvjax.train.hooks import MetricsLog, Progress
from rwkvjax.train.loop import Hook, StepInfo, train_loop
from rwkvjax.train.objective import nll_per_token
from rwkvjax.train.optim import Group, make_optimizer
from rwkvjax.train.signals import StopSignals, note_saved
from rwkvjax.train.step import data_mesh, replicate, shard_rows

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
    return nll_per_token(params, x_BT, y_BT, state, config=config, wkv_impl=wkv_impl, remat=remat)


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


class SegmentLearner:
    """What `train_loop` updates when pretraining: every weight and its AdamW state, and the recurrent state
    carried through the current segment (truncated BPTT). A batch is the columns of the segment one step reads
    (`windows`); the step that starts a segment draws it, so the RNG moves only with a step that is made."""

    def __init__(self, cfg: PretrainConfig, config, train_step, mesh, stream: np.ndarray, rng: np.random.Generator,
                 params, opt_state, segment: dict | None):
        self.cfg, self.config, self.train_step, self.mesh = cfg, config, train_step, mesh
        self.stream, self.rng = stream, rng
        self.params, self.opt_state = replicate(params, mesh), replicate(opt_state, mesh)
        self.seg, self.state = None, None
        if segment is not None:  # resumed inside a segment: it and its carried state, exactly
            self.seg, self.state = np.asarray(segment["seg"]), shard_rows(segment["state"], mesh, axis=1)
        self.losses: list = []  # device scalars since the last held-out evaluation (read there, not per step)

    def windows(self, step: int):
        """The columns (inputs and the targets one to the right) of each step's window, from `step` on."""
        T, K = self.cfg.ctx_len, self.cfg.windows_per_segment
        while True:
            w = step % K
            yield slice(w * T, (w + 1) * T + 1)
            step += 1

    def update(self, cols: slice):
        c = self.cfg
        if cols.start == 0 or self.seg is None:
            self.seg = segment_batch(self.stream, self.rng, c.batch, c.ctx_len * c.windows_per_segment, c.copy_prob,
                                     c.copy_noise)
            self.state = shard_rows(zero_state(self.config, c.batch), self.mesh, axis=1)
        window_BT1 = self.seg[:, cols]  # T inputs and, one to the right, T targets
        x_BT, y_BT = shard_rows((window_BT1[:, :-1], window_BT1[:, 1:]), self.mesh)
        self.params, self.opt_state, self.state, loss = self.train_step(self.params, self.opt_state, self.state,
                                                                         x_BT, y_BT)
        self.losses.append(loss)
        return loss


class HeldoutEval(Hook):
    """Every `every` steps and at the last one: the mean training loss since the last record, speed and the
    held-out figures, into the step's record (register it before `MetricsLog`, which writes what it fills)."""

    def __init__(self, learner: SegmentLearner, evaluate: Callable[[], dict], every: int, last: int,
                 tokens_per_step: int, say: Callable[[str], None] = lambda text: None):
        self.learner, self.evaluate, self.eval_every, self.last, self.say = learner, evaluate, every, last, say
        self.tokens_per_step, self.t0, self.steps = tokens_per_step, time.perf_counter(), 0
        self.latest: dict = {}

    def after_step(self, info: StepInfo):
        self.steps += 1
        if info.step % self.eval_every and info.step != self.last:
            return
        losses, self.learner.losses = self.learner.losses, []
        self.say(f"scoring the held-out text after step {info.step}")  # (the first time, compiling it)
        info.record.update({"train_loss": float(np.mean([float(v) for v in losses])),
                            "tokens_per_s": self.steps * self.tokens_per_step / (time.perf_counter() - self.t0),
                            "tokens_seen": info.step * self.tokens_per_step, **self.evaluate(),
                            "time": time.time()})
        self.latest = info.record


def _evaluated(record: dict) -> bool:
    return "train_loss" in record


def _postfix(record: dict) -> dict | None:
    if not _evaluated(record):
        return None
    return {"loss": f"{record['train_loss']:.3f}", "heldout_bpb": f"{record['heldout_bits_per_byte']:.3f}",
            "tok_s": f"{record['tokens_per_s']:.0f}"}


class SegmentCheckpoint(Hook):
    """Periodic checkpoints at segment boundaries (a resumed run draws a fresh segment, as this one would) and at
    the last step; stopped between them (Ctrl-C), the step reached, with the segment and its carried state when
    it stopped inside one, so the resumed run continues exactly where this one stopped."""

    def __init__(self, save: Callable[[int, bool], None], cfg: PretrainConfig, step: int, log):
        self.save, self.cfg, self.saved, self.log = save, cfg, step, log

    def at_start(self, step: int) -> None:
        note_saved(step)  # a run that starts after step N resumed it from its checkpoint

    def after_step(self, info: StepInfo):
        K = self.cfg.windows_per_segment
        if (info.step % K == 0 and (info.step // K) % max(self.cfg.save_every // K, 1) == 0) \
                or info.step == self.cfg.steps:
            self.save(info.step, False)
            self.saved = info.step
            note_saved(info.step)

    def at_end(self, step: int, reason: str) -> None:
        # after an error the arrays may be the step's donated inputs: saving them would hide the error
        if step != self.saved and reason != "error":
            self.save(step, step % self.cfg.windows_per_segment != 0)
            note_saved(step)
            self.log(f"stopped at step {step}: saved")


# ----- the run -----

def _check_resume(out: Path, cfg: PretrainConfig) -> None:
    recipe = out / "recipe.json"
    if not recipe.is_file() or not (out / "ckpt").is_dir():
        return
    PretrainConfig.RESUME.check(json.loads(recipe.read_text()).get("pretrain_config", {}), dataclasses.asdict(cfg),
                                where=str(out), remedy="keep it to resume, or use another --out")


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


# The checkpoint items of the parameters and the optimizer state: `TrainCheckpointer`'s since pretraining saves
# through it; a step written before (items 'params' and 'opt', its host without "items") is read as it was.
ITEMS = ("trainable", "opt_state")
OLD_ITEMS = ("params", "opt")


def _read_step(ckpt: TrainCheckpointer, step: int, params, opt_state, seg_like) -> tuple:
    """(params, opt_state, host, segment or None) of one step (raises on a damaged step)."""
    host = ckpt.restore_host(step)
    if host.get("items") == list(ITEMS):
        params, opt_state, host = ckpt.restore(step, params, opt_state)
    else:
        trees = ckpt.restore_extra(step, dict(zip(OLD_ITEMS, (params, opt_state))))
        params, opt_state = (trees[k] for k in OLD_ITEMS)
    segment = ckpt.restore_extra(step, {"segment": seg_like})["segment"] if host.get("mid_segment") else None
    return params, opt_state, host, segment


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
        init = load(cfg.init_from)
        init_config, params = init.arch, init.params
        if init_config != config:
            raise CheckpointMismatch(f"--init-from {cfg.init_from}: its shape {init_config} differs from "
                                     f"--vocab/--n-layer/--n-embd ({config})")
    opt_state = tx.init(params)
    # every check has passed: only now is anything in the folder written
    recipe = {"pretrain_config": dataclasses.asdict(cfg), "model_config": dataclasses.asdict(config),
              "corpus": cstats, "python": platform.python_version(), "installed_packages": _installed_packages()}
    atomic_write(out / "recipe.json", json.dumps(recipe, indent=1).encode(), private=False)
    rng = np.random.default_rng(cfg.seed)
    T, K = cfg.ctx_len, cfg.windows_per_segment
    # data parallel over the local devices (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 on a
    # 2-core CPU: two XLA devices keep both cores busy, measured in benchmarks/RESULTS.md)
    mesh = data_mesh()
    n_dev = len(mesh.local_devices)
    if cfg.batch % n_dev:
        raise ConfigError(f"--batch {cfg.batch} does not divide over the {n_dev} local devices")
    ckpt = TrainCheckpointer(out / "ckpt", keep=2, async_save=False)
    try:
        seg_like = {"seg": np.zeros((cfg.batch, T * K + 1), np.int32), "state": zero_state(config, cfg.batch)}
        # the newest step that reads back whole; damaged ones are moved aside with one warning
        found = ckpt.newest_intact(lambda s: _read_step(ckpt, s, params, opt_state, seg_like), set_aside=True)
        step, segment = 0, None
        if found is not None:
            params, opt_state, host, segment = found[1]
            step = host["step"]
            rng.bit_generator.state = host["rng"]
            log(f"resumed at step {step}" + (" (inside a segment: its carried state restored)" if segment else ""))
        train_step, eval_window = make_steps(config, tx, cfg)
        learner = SegmentLearner(cfg, config, train_step, mesh, stream, rng, params, opt_state, segment)
        eval_x, eval_mask = _eval_rows(held_docs, T, cfg.eval_bytes)
        copy_x = _copy_rows(held_docs)
        eval_bytes = sum(len(tok.decode_bytes(row[1:int(m.sum()) + 1].tolist()))
                         for row, m in zip(eval_x, eval_mask))

        def evaluate() -> dict:
            bits = _scored_bits(eval_window, learner.params, config, eval_x, eval_mask, T)
            rec = {"heldout_bits_per_token": float(bits.sum() / eval_mask.sum()),
                   "heldout_bits_per_byte": float(bits.sum() / eval_bytes)}
            if copy_x is not None:
                n = (copy_x.shape[1] - 1) // 2
                cmask = np.ones((copy_x.shape[0], copy_x.shape[1] - 1), np.float32)
                cb = _scored_bits(eval_window, learner.params, config, copy_x, cmask, T)
                rec["copy_first_bits_per_token"] = float(cb[:, :n].mean())
                rec["copy_second_bits_per_token"] = float(cb[:, n:].mean())
            return rec

        def save(step: int, mid_segment: bool) -> None:
            """A step (stopped inside a segment: with the segment and its carried state), and the model."""
            host = {"step": step, "rng": rng.bit_generator.state, "mid_segment": mid_segment, "items": list(ITEMS)}
            items = dict(zip(ITEMS, (learner.params, learner.opt_state)))
            if mid_segment:
                items["segment"] = {"seg": learner.seg, "state": jax.device_get(learner.state)}
            ckpt.save_items(step, items, host)
            save_official(learner.params, config, out / "model.safetensors", "bf16",
                          {"pretrain_step": str(step), "recipe": "recipe.json"})

        progress = Progress(cfg.steps, step, postfix=_postfix, what="pretrain")
        heldout = HeldoutEval(learner, evaluate, cfg.eval_every, cfg.steps, cfg.batch * T, progress.reporter.phase)
        hooks = [heldout, MetricsLog(out / "metrics.jsonl", logged=_evaluated, echo=log), progress,
                 SegmentCheckpoint(save, cfg, step, log)]
        stop = threading.Event()
        with StopSignals(stop) as signals:  # Ctrl-C/SIGTERM: the step in flight finishes, then everything is saved
            step, _ = train_loop(learner, learner.windows(step), hooks, step=step, steps=cfg.steps, stop=stop,
                                 describe=lambda s, _: {"step": s})
    finally:
        ckpt.close()
    signals.raise_if_stopped()
    return {"model": str(out / "model.safetensors"), "step": step, **heldout.latest,
            "corpus": {k: v for k, v in cstats.items() if k != "heldout_packages"}}
