"""The held-out measurement of an offline-trained merge hypernetwork (`cli.py hypernet`).

The training itself is `train.hypernet`. Here the sessions are split by time (the latest held out, never trained
on), the hypernetwork is trained on the merged stream of the others (or of `--corpus`), and the held-out sessions
are scored three ways with the state carried through each session: plain base tokens, merges with the untrained
hypernetwork, and merges with the trained one. Strict bits per byte are comparable across the three (see
`merges.hypernet`). The scoring time of each pass (dynamic tokenizer included for merges) gives the wall-clock
gain.

The result file (`save_hypernet`) is what `train --merges --hypernet FILE` and `eval --hypernet FILE` start from.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time

import jax
import numpy as np

from rwkvjax.eval.scoring import score_stream, score_windows
from rwkvjax.eval.sessions import load_sessions, split_by_time
from rwkvjax.merges.dyntok import for_tokenizer
from rwkvjax.merges.hypernet import init_hypernet
from rwkvjax.merges.hypernet_io import save_hypernet
from rwkvjax.model.state import zero_state
from rwkvjax.model.units import LN2
from rwkvjax.model.value import Model
from rwkvjax.train.config import HyperTrainConfig
from rwkvjax.train.data import stream_windows
from rwkvjax.train.hypernet import corpus_streams, train_hypernet, train_speed

__all__ = ["run_hyper_train"]

log = logging.getLogger(__name__)


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


def run_hyper_train(cfg: HyperTrainConfig, model: Model, *, progress: bool | None = None) -> dict:
    """Split, train (`train.hypernet.train_hypernet`), time the training step, measure on the held-out sessions;
    the file at `cfg.out` is written after training and again with the held-out figures."""
    config, params, tok = model.arch, model.params, model.tokenizer
    sessions = load_sessions(cfg.traces, tok)
    split_by_time(sessions, cfg.heldout_fraction)
    heldout = [s for s in sessions if s.heldout]
    train = [s for s in sessions if not s.heldout]
    dyntok = for_tokenizer(tok, window=cfg.window, threshold=cfg.threshold, n_slots=cfg.n_slots)
    streams, corpus_stats = ([(s.sid, s.tokens) for s in train], None) if not cfg.corpus else \
        corpus_streams(cfg, tok)
    windows = []
    for name, toks in streams:
        windows += stream_windows(name, toks, cfg.ctx_len, tok, dyntok)
    tstats = dyntok.stats(top=10)
    log.info("hypernet: %d training %s -> %d windows, %.3f recurrent steps per base token; %d sessions held out",
             len(streams), "files" if cfg.corpus else "sessions", len(windows), tstats["steps_per_base_token"],
             len(heldout))

    hyper0 = init_hypernet(config, jax.random.key(cfg.seed))
    model_hash = model.hash
    split = {"train_sessions": [] if cfg.corpus else [s.sid for s in train], "corpus": corpus_stats,
             "heldout_sessions": [s.sid for s in heldout]}
    trained = train_hypernet(cfg, config, params, windows, hyper0, model_hash=model_hash, meta=split,
                             progress=progress)
    hyper = trained.trainable.hyper

    plain_wins = []
    for name, toks in streams:
        plain_wins += stream_windows(name, toks, cfg.ctx_len, tok)
    speed = train_speed(cfg, config, params, plain_wins, windows, hyper)

    held = _measure(params, config, tok, heldout, cfg.ctx_len,
                    {"plain": None, "merges_untrained": hyper0, "merges_trained": hyper}, dyntok)
    for name in ("merges_untrained", "merges_trained"):
        held[name]["bpb_vs_plain"] = held[name]["bpb"] / held["plain"]["bpb"] - 1.0
        held[name]["score_speed_gain"] = (held[name]["score_base_tokens_per_s"]
                                          / held["plain"]["score_base_tokens_per_s"])
    res = {"config": dataclasses.asdict(cfg), "model_hash": model_hash, **split,
           "train_windows": len(windows), "train_seconds": trained.seconds, "curve": trained.curve,
           "train_steps_per_base_token": tstats["steps_per_base_token"],
           "heldout_steps_per_base_token": held["merges_trained"]["steps_per_base_token"],
           "heldout": held, "train_speed": speed, "top_merges": tstats["top_merges"]}
    save_hypernet(cfg.out, hyper, config, model_hash, split | {
        "steps": trained.steps, "heldout_bpb": {k: held[k]["bpb"] for k in ("plain", "merges_trained")}})
    return res
