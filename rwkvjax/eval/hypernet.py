"""Offline hypernetwork training for dynamic merges, and its held-out measurement.

The hypernetwork starts as an exact identity-like map (see `hypernet`), which leaves merges costing bits.
Here it is trained on the merged stream of a folder of sessions with the model and S0 frozen, then the
held-out sessions (the latest ones by start time, never trained on) are scored three ways with the state
carried through each session: plain base tokens, merges with the untrained hypernetwork, and merges with
the trained one. Strict bits per byte are comparable across the three (see `hypernet`). The scoring time
of each pass (dynamic tokenizer included for merges) gives the wall-clock gain.

The result file (`save_hypernet`) is what `train --merges --hypernet FILE` and `eval --hypernet FILE` start from.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import DataError
from rwkvjax.eval.config import HyperTrainConfig
from rwkvjax.eval.scoring import score_stream, score_windows
from rwkvjax.eval.sessions import load_sessions, split_by_time
from rwkvjax.merges.dyntok import for_tokenizer
from rwkvjax.merges.hypernet import init_hypernet
from rwkvjax.merges.hypernet_io import save_hypernet
from rwkvjax.merges.units import MERGED, PLAIN
from rwkvjax.model.state import zero_state
from rwkvjax.model.units import LN2
from rwkvjax.train.corpus import corpus_files, read_text_files
from rwkvjax.train.data import make_batch, stream_windows
from rwkvjax.train.optim import Group, make_optimizer
from rwkvjax.train.signals import StopSignals
from rwkvjax.train.step import make_train_step
from rwkvjax.train.trainable import group_labels, init_trainable

__all__ = ["HyperTrainConfig", "run_hyper_train"]



# ----- training and measurement -----

def _optimizer(tr, cfg: HyperTrainConfig):
    """S0 stays the frozen model's zeros; the hypernetwork trains (optax's default AdamW b2 and decay)."""
    hyper = Group(cfg.lr, cfg.lr_final, cfg.warmup, b2=0.999, weight_decay=1e-4)
    return make_optimizer(group_labels(tr), {"state": Group(frozen=True), "hyper": hyper},
                          decay_steps=max(cfg.steps, cfg.warmup + 1), clip_norm=1.0, max_nonfinite=100)


def _score_session(params, config, tok, s, ctx_len, hyper=None, dyntok=None) -> tuple[float, float, int]:
    """(bits, seconds, recurrent steps) of one session, state carried; merges encode the session here (timed)."""
    t0 = time.perf_counter()
    state = zero_state(config, 1)
    if hyper is None:
        nlls = [np.asarray(score_stream(params, config, s.tokens, state, max_len=ctx_len)[0], np.float64)]
    else:
        wins = stream_windows(s.sid, s.tokens, ctx_len, tok, dyntok)
        nlls, _ = score_windows(params, config, wins, state, hyper=hyper, max_len=ctx_len)
    return sum(float(n.sum()) for n in nlls) / LN2, time.perf_counter() - t0, sum(n.size for n in nlls)


def _measure(params, config, tok, sessions, ctx_len, arms: dict, dyntok) -> dict:
    """Strict bpb, recurrent steps and scoring speed of every arm on the held-out sessions (2nd of 2 passes timed)."""
    nbytes = sum(int(s.nbytes.sum()) for s in sessions)
    ntok = sum(len(s.tokens) for s in sessions)
    out = {}
    for name, hyper in arms.items():
        for rep in range(2):  # the first pass compiles every piece length
            bits = secs = steps = 0
            tk = None if hyper is None else copy.deepcopy(dyntok)
            for s in sessions:
                b, t, n = _score_session(params, config, tok, s, ctx_len, hyper, tk)
                bits, secs, steps = bits + b, secs + t, steps + n
        out[name] = {"bpb": bits / nbytes, "score_base_tokens_per_s": ntok / secs, "steps_per_base_token": steps / ntok}
    out["bytes"], out["base_tokens"] = nbytes, ntok
    return out


def _time_steps(step, tr, opt, params, batches, n) -> float:
    """Seconds per step over n steps after one warm-up step (compilation)."""
    tr, opt, m = step(tr, opt, params, batches[0])
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(n):
        tr, opt, m = step(tr, opt, params, batches[(i + 1) % len(batches)])
    jax.block_until_ready(m)
    return (time.perf_counter() - t0) / n


def _corpus_streams(cfg: HyperTrainConfig, tok) -> tuple[list[tuple[str, list[int]]], dict]:
    """(name, tokens) per UTF-8 text file, in a hash order (a mix of folders), up to max_corpus_bytes."""
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


def run_hyper_train(cfg: HyperTrainConfig, model, *, log=print) -> dict:
    config, params, tok = model.arch, model.params, model.tokenizer
    sessions = load_sessions(cfg.traces, tok)
    split_by_time(sessions, cfg.heldout_fraction)
    heldout = [s for s in sessions if s.heldout]
    train = [s for s in sessions if not s.heldout]
    dyntok = for_tokenizer(tok, window=cfg.window, threshold=cfg.threshold, n_slots=cfg.n_slots)
    streams, corpus_stats = ([(s.sid, s.tokens) for s in train], None) if not cfg.corpus else \
        _corpus_streams(cfg, tok)
    windows = []
    for name, toks in streams:
        windows += stream_windows(name, toks, cfg.ctx_len, tok, dyntok)
    tstats = dyntok.stats(top=10)
    log(f"hypernet: {len(streams)} training {'files' if cfg.corpus else 'sessions'} -> {len(windows)} windows, "
        f"{tstats['steps_per_base_token']:.3f} recurrent steps per base token; {len(heldout)} sessions held out")

    hyper0 = init_hypernet(config, jax.random.key(cfg.seed))
    tr = init_trainable(config, hyper=jax.tree.map(jnp.copy, hyper0))
    tx = _optimizer(tr, cfg)
    opt = tx.init(tr)
    step = make_train_step(config, tx, units=MERGED, max_traces=None)
    rng = np.random.default_rng(cfg.seed)
    mk = lambda ws: make_batch(ws, [1.0] * len(ws), batch_size=cfg.batch, ctx_len=cfg.ctx_len, n_slots=cfg.n_slots)
    order, curve, t_train, done = [], [], time.perf_counter(), 0
    model_hash = model.hash
    split = {"train_sessions": [] if cfg.corpus else [s.sid for s in train], "corpus": corpus_stats,
             "heldout_sessions": [s.sid for s in heldout]}
    with StopSignals() as signals:  # Ctrl-C/SIGTERM: the step in flight finishes, what is trained is saved
        while done < cfg.steps and not signals.event.is_set():
            if len(order) < cfg.batch:
                order += list(rng.permutation(len(windows)))
            idx, order = order[:cfg.batch], order[cfg.batch:]
            tr, opt, m = step(tr, opt, params, mk([windows[j] for j in idx]))
            if done % 25 == 0 or done == cfg.steps - 1:
                bpb = float(m["bits"]) / float(m["bytes"])
                curve.append({"step": done, "train_bpb": bpb})
                log(f"hypernet step {done}: train strict bpb {bpb:.4f}")
            done += 1
        t_train = time.perf_counter() - t_train
        # saved before the (long) measurement, so that nothing trained is lost to an interrupt there
        save_hypernet(cfg.out, tr.hyper, config, model_hash, split | {"steps": done, "heldout_bpb": None})
        if signals.event.is_set():
            log(f"hypernet: stopped after {done} of {cfg.steps} steps; saved to {cfg.out} (not measured)")
    signals.raise_if_stopped()

    # wall-clock training speed per base token: merged windows vs plain windows of the same stream
    plain_wins = []
    for name, toks in streams:
        plain_wins += stream_windows(name, toks, cfg.ctx_len, tok)
    n = cfg.speed_steps
    speed = {}
    for name, wins, units in (("plain", plain_wins, PLAIN), ("merges", windows, MERGED)):
        tr_s = init_trainable(config, hyper=jax.tree.map(jnp.copy, tr.hyper) if units is MERGED else None)
        tx_s = _optimizer(tr_s, cfg)
        chunks = [wins[j:j + cfg.batch] for j in range(0, cfg.batch * (n + 1), cfg.batch)]
        batches = [make_batch(c, [1.0] * len(c), batch_size=cfg.batch, ctx_len=cfg.ctx_len,
                              n_slots=cfg.n_slots if units is MERGED else None) for c in chunks]
        base = sum(w.n_base for c in chunks for w in c) / len(chunks)
        sec = _time_steps(make_train_step(config, tx_s, units=units, max_traces=None), tr_s, tx_s.init(tr_s),
                          params, batches, n)
        speed[name] = {"step_s": sec, "base_tokens_per_s": base / sec}
    speed["gain"] = speed["merges"]["base_tokens_per_s"] / speed["plain"]["base_tokens_per_s"]

    held = _measure(params, config, tok, heldout, cfg.ctx_len,
                    {"plain": None, "merges_untrained": hyper0, "merges_trained": tr.hyper}, dyntok)
    for name in ("merges_untrained", "merges_trained"):
        held[name]["bpb_vs_plain"] = held[name]["bpb"] / held["plain"]["bpb"] - 1.0
        held[name]["score_speed_gain"] = (held[name]["score_base_tokens_per_s"]
                                          / held["plain"]["score_base_tokens_per_s"])
    res = {"config": dataclasses.asdict(cfg), "model_hash": model_hash, **split,
           "train_windows": len(windows), "train_seconds": t_train, "curve": curve,
           "train_steps_per_base_token": tstats["steps_per_base_token"],
           "heldout_steps_per_base_token": held["merges_trained"]["steps_per_base_token"],
           "heldout": held, "train_speed": speed, "top_merges": tstats["top_merges"]}
    save_hypernet(cfg.out, tr.hyper, config, model_hash,
                  split | {"steps": done, "heldout_bpb": {k: held[k]["bpb"] for k in ("plain", "merges_trained")}})
    return res
