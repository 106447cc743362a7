"""Offline hypernetwork training for dynamic merges (`cli.py hypernet`), and its training-speed comparison.

The hypernetwork starts as an exact identity-like map (`merges.hypernet`), which leaves merges costing bits. Here
it is trained on merged windows with the model and S0 frozen: `train_loop` with state tuning's `Learner` (merged
units, no replay), the windows in shuffled passes, Ctrl-C/SIGTERM through `StopSignals`, the records through
train's hooks (`MetricsLog` with `--metrics`, the `Progress` bar). What it trained is saved before anything else
runs, so an interrupt keeps it. `eval.hypernet` measures the result on held-out sessions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import DataError
from rwkvjax.merges.hypernet_io import save_hypernet
from rwkvjax.merges.units import MERGED, PLAIN
from rwkvjax.train.config import HyperTrainConfig
from rwkvjax.train.corpus import corpus_files, read_text_files
from rwkvjax.train.data import Window, make_batch
from rwkvjax.train.hooks import MetricsLog, Progress
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import Hook, StepInfo, train_loop
from rwkvjax.train.optim import Group, make_optimizer
from rwkvjax.train.signals import StopSignals
from rwkvjax.train.step import make_train_step
from rwkvjax.train.trainable import Trainable, group_labels, init_trainable

log = logging.getLogger(__name__)

CURVE_EVERY = 25  # steps between the points of the training curve (and the first and last step)


def hypernet_optimizer(tr: Trainable, cfg: HyperTrainConfig):
    """S0 stays the frozen model's zeros; the hypernetwork trains (optax's default AdamW b2 and decay)."""
    hyper = Group(cfg.lr, cfg.lr_final, cfg.warmup, b2=0.999, weight_decay=1e-4)
    return make_optimizer(group_labels(tr), {"state": Group(frozen=True), "hyper": hyper},
                          decay_steps=max(cfg.steps, cfg.warmup + 1), clip_norm=1.0, max_nonfinite=100)


def corpus_streams(cfg: HyperTrainConfig, tok) -> tuple[list[tuple[str, list[int]]], dict]:
    """(name, tokens) per UTF-8 text file of `cfg.corpus`, in a hash order (a mix of folders), up to
    max_corpus_bytes."""
    files = sorted(corpus_files(cfg.corpus), key=lambda f: hashlib.sha256(str(f).encode()).hexdigest())
    out, stats = [], {"files": 0, "skipped_binary": 0, "bytes": 0}
    for f, raw, text in read_text_files(files, stats):
        if text:
            out.append((str(f), tok.encode(text)))
            stats["files"] += 1
            stats["bytes"] += len(raw)
        if stats["bytes"] >= cfg.max_corpus_bytes:
            break
    if not out:
        raise DataError(f"--corpus {list(cfg.corpus)}: no UTF-8 text files found")
    return out, stats


@dataclasses.dataclass
class HypernetTraining:
    trainable: Trainable   # S0 (the frozen zeros) and the trained hypernetwork
    curve: list[dict]      # {"step" (0-based), "train_bpb"} every CURVE_EVERY steps and at the last
    steps: int             # steps made
    seconds: float
    stopped: str           # why the loop ended ("done", "interrupted")


class Curve(Hook):
    """The batch's strict bits per byte at the first step, every CURVE_EVERY steps after it and at the last, into
    the curve (and a log line)."""

    def __init__(self, last: int):
        self.last, self.points = last, []

    def after_step(self, info: StepInfo):
        if (info.step - 1) % CURVE_EVERY and info.step != self.last:
            return
        bpb = info.record["bits_per_byte"]
        self.points.append({"step": info.step - 1, "train_bpb": bpb})
        log.info("hypernet step %d: train strict bpb %.4f", info.step - 1, bpb)


def _describe(step: int, upd) -> dict:
    m = upd.metrics
    return {"step": step, "time": time.time(), "loss": m["loss"], "bits_per_byte": m["bits"] / m["bytes"],
            "tokens_per_s": m["tokens"] / upd.seconds, "step_s": upd.seconds, "grad_norm": m["grad_norm"]}


def _postfix(r: dict) -> dict:
    return {"loss": f"{r['loss']:.3f}", "bpb": f"{r['bits_per_byte']:.3f}", "tok_s": f"{r['tokens_per_s']:.0f}"}


def train_hypernet(cfg: HyperTrainConfig, config, params, windows: list[Window], hyper0, *, model_hash: str,
                   meta: dict, progress: bool | None = None) -> HypernetTraining:
    """Train from `hyper0` on merged `windows` for `cfg.steps` steps and save the result to `cfg.out` (with
    `meta`, the steps made and no held-out figure yet). A signal stops it after the step in flight, saves, and
    raises (`KeyboardInterrupt` or `Terminated`)."""
    tr = init_trainable(config, hyper=jax.tree.map(jnp.copy, hyper0))
    learner = Learner(config, params, tr, hypernet_optimizer(tr, cfg), ctx_len=cfg.ctx_len, live_per_step=cfg.batch,
                      units=MERGED, n_slots=cfg.n_slots, max_traces=None)
    rng = np.random.default_rng(cfg.seed)

    def batches():
        """Windows in shuffled passes, `cfg.batch` a step (a pass's remainder starts the next one's)."""
        order: list[int] = []
        while True:
            if len(order) < cfg.batch:
                order += list(rng.permutation(len(windows)))
            idx, order = order[:cfg.batch], order[cfg.batch:]
            yield [windows[j] for j in idx]

    curve = Curve(cfg.steps)
    hooks = [curve] + ([MetricsLog(cfg.metrics)] if cfg.metrics else []) + \
        [Progress(cfg.steps, 0, progress, postfix=_postfix, what="hypernet")]
    t0 = time.perf_counter()
    with StopSignals() as signals:  # Ctrl-C/SIGTERM: the step in flight finishes, what is trained is saved
        done, stopped = train_loop(learner, batches(), hooks, step=0, steps=cfg.steps, stop=signals.event,
                                   describe=_describe)
        seconds = time.perf_counter() - t0
        # saved before the (long) measurement, so that nothing trained is lost to an interrupt there
        save_hypernet(cfg.out, learner.trainable.hyper, config, model_hash, meta | {"steps": done, "heldout_bpb": None})
        if signals.event.is_set():
            log.warning("hypernet: stopped after %d of %d steps; saved to %s (not measured)", done, cfg.steps,
                        cfg.out)
    signals.raise_if_stopped()
    return HypernetTraining(learner.trainable, curve.points, done, seconds, stopped)


def _time_steps(step, tr, opt, params, batches, n) -> float:
    """Seconds per step over n steps after one warm-up step (compilation)."""
    tr, opt, m = step(tr, opt, params, batches[0])
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(n):
        tr, opt, m = step(tr, opt, params, batches[(i + 1) % len(batches)])
    jax.block_until_ready(m)
    return (time.perf_counter() - t0) / n


def train_speed(cfg: HyperTrainConfig, config, params, plain: list[Window], merged: list[Window], hyper) -> dict:
    """Wall-clock training speed per base token, merged windows (with `hyper`) vs plain windows of the same
    stream: `cfg.speed_steps` steps timed per arm after a compiling one."""
    n = cfg.speed_steps
    speed = {}
    for name, wins, units in (("plain", plain, PLAIN), ("merges", merged, MERGED)):
        tr_s = init_trainable(config, hyper=jax.tree.map(jnp.copy, hyper) if units is MERGED else None)
        tx_s = hypernet_optimizer(tr_s, cfg)
        chunks = [wins[j:j + cfg.batch] for j in range(0, cfg.batch * (n + 1), cfg.batch)]
        batches = [make_batch(c, [1.0] * len(c), batch_size=cfg.batch, ctx_len=cfg.ctx_len,
                              n_slots=cfg.n_slots if units is MERGED else None) for c in chunks]
        base = sum(w.n_base for c in chunks for w in c) / len(chunks)
        sec = _time_steps(make_train_step(config, tx_s, units=units, max_traces=None), tr_s, tx_s.init(tr_s),
                          params, batches, n)
        speed[name] = {"step_s": sec, "base_tokens_per_s": base / sec}
    speed["gain"] = speed["merges"]["base_tokens_per_s"] / speed["plain"]["base_tokens_per_s"]
    return speed
