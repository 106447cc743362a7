"""Prequential (test-then-train) evaluation of state-tuning arms on a folder of Claude Code sessions.

Sessions are ordered by start time. Every k-th session is a forward held-out session: it is scored when
it comes, with each arm's current S0, and never trained on. Every other session is scored first
(teacher-forced, state carried across the whole session) and then trained on with the same learner
update as `train` (`rwkvjax.train.learner`). Canary texts (general code and prose absent from the
traces) are scored after every update round to catch harm elsewhere. Protocol: Dawid's prequential
principle (https://doi.org/10.2307/2981683), test-then-train on a stream.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import DataError
from rwkvjax.eval.config import ARMS, EvalConfig
from rwkvjax.eval.scoring import score_stream, score_windows
from rwkvjax.eval.sessions import ROLES, Session, load_sessions
from rwkvjax.merges.dyntok import for_tokenizer
from rwkvjax.merges.hypernet_io import start_hypernet
from rwkvjax.merges.units import MERGED, PLAIN
from rwkvjax.model.params import params_hash
from rwkvjax.model.state import State
from rwkvjax.train.data import Window, stream_windows
from rwkvjax.train.learner import Learner
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.probe import default_canaries, read_texts
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.trainable import Trainable, init_trainable, initial_state

__all__ = ["ARMS", "EvalConfig", "ROLES", "Session", "load_sessions", "run_eval", "POSITION_BUCKETS"]

LN2 = math.log(2.0)
POSITION_BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, None))


class Arm:
    """One arm: its learner (S0, hypernetwork, optimizer, replay buffer) and its dynamic tokenizer."""

    def __init__(self, name: str, cfg: EvalConfig, config, params, tok, model_hash: str | None = None):
        self.name, self.cfg, self.config, self.tok = name, cfg, config, tok
        self.trains = name not in ("frozen", "carry")
        self.merges = name == "merges"
        hyper = start_hypernet(config, cfg.hypernet, cfg.seed, model_hash) if self.merges else None
        self.trainable0 = init_trainable(config, hyper=hyper)
        self.dyntok = for_tokenizer(tok) if self.merges else None
        self.learner = None
        if self.trains:
            replay = None
            if name in ("tuned_replay", "tuned_replay_reducible", "merges"):
                replay = ReplayBuffer(ReplaySettings(priority="surprise" if name == "tuned_replay" else "reducible"),
                                      seed=cfg.seed)
            tx = state_tuning_optimizer(self.trainable0, OptimConfig(
                state_lr=cfg.lr, state_lr_final=cfg.lr_final, hyper_lr=cfg.hyper_lr, decay_steps=1000))
            self.learner = Learner(config, params, self.trainable0, tx, ctx_len=cfg.ctx_len,
                                   live_per_step=cfg.live_per_step, replay_per_step=cfg.replay_per_step,
                                   replay=replay, units=MERGED if self.merges else PLAIN,
                                   n_slots=self.dyntok.settings.n_slots if self.merges else None, max_traces=None)
        self.carried: State | None = None
        self.trained_sessions: set[str] = set()
        self.train_tokens = 0
        self.train_seconds = 0.0

    @property
    def trainable(self) -> Trainable:
        return self.trainable0 if self.learner is None else self.learner.trainable

    @property
    def updates(self) -> int:
        return 0 if self.learner is None else self.learner.updates

    def start_state(self) -> State:
        if self.name == "carry" and self.carried is not None:
            return self.carried
        return initial_state(self.trainable, 1)

    def segments(self, s: Session) -> list[Window]:
        """The session as consecutive windows of <= ctx_len units (dynamic merges applied causally)."""
        return stream_windows(s.sid, s.tokens, self.cfg.ctx_len, self.tok, self.dyntok)

    def score_merged(self, params, s: Session) -> tuple[np.ndarray, list[Window]]:
        """Bits per base token position (a merged unit's bits go to its first token), state carried."""
        wins = self.segments(s)
        nlls, _ = score_windows(params, self.config, wins, self.start_state(), hyper=self.trainable.hyper,
                                max_len=self.cfg.ctx_len)
        bits = np.zeros(len(s.tokens), np.float64)
        pos = 0
        for w, nll in zip(wins, nlls):
            widths = [2 if u >= self.config.vocab_size else 1 for u in w.units]
            starts = pos + np.concatenate([[0], np.cumsum(widths)[:-1]])
            bits[starts] = nll / LN2
            pos += w.n_base
        return bits, wins

    def train(self, s: Session, wins: list[Window]):
        if self.learner is None:
            return
        live_all = wins[: self.cfg.max_windows_per_session]
        n = self.cfg.live_per_step
        t0 = time.perf_counter()
        for i in range(0, len(live_all), n):
            upd = self.learner.update(live_all[i:i + n])
            self.train_tokens += int(sum(len(w.units) for w in upd.live + upd.replayed))
            self.trained_sessions.update(w.session for w in upd.live + upd.replayed)
        jax.block_until_ready(self.learner.trainable.wkv)
        self.train_seconds += time.perf_counter() - t0

    def score_canary(self, params, tokens: np.ndarray) -> float:
        nll, _ = score_stream(params, self.config, tokens, initial_state(self.trainable, 1), max_len=self.cfg.ctx_len)
        return float(nll.sum() / LN2)


def score_plain(arms: list[Arm], params, s: Session) -> list[np.ndarray]:
    """Bits per token for several plain-vocabulary arms at once: one batch row per arm's start state."""
    states = [a.start_state() for a in arms]
    state = jax.tree.map(lambda *x: jnp.concatenate(x, axis=1), *states)
    nll, state = score_stream(params, arms[0].config, s.tokens, state, max_len=arms[0].cfg.ctx_len)
    nll = np.asarray(nll).reshape(len(arms), -1)
    for i, a in enumerate(arms):
        if a.name == "carry":
            a.carried = jax.tree.map(lambda x: x[:, i:i + 1], state)
    return [row.astype(np.float64) / LN2 for row in nll]


def run_eval(cfg: EvalConfig, model, *, log=print) -> dict:
    """Run every arm over the same stream; returns the raw results (see `report.write_eval_report`)."""
    from rwkvjax.text.tokenizer import for_vocab
    config, params = model
    tok = for_vocab(config.vocab_size)
    sessions = load_sessions(cfg.traces, tok)
    if len(sessions) < 2:
        raise DataError(f"{cfg.traces}: {len(sessions)} session(s); the evaluation needs at least 2")
    for i, s in enumerate(sessions):
        s.heldout = (i + 1) % cfg.k == 0
    texts = read_texts(cfg.canaries or default_canaries())
    canaries = {name: np.asarray(tok.encode(t), np.int32) for name, t in texts.items()}
    canary_bytes = {name: len(t.encode()) for name, t in texts.items()}
    mhash = params_hash(params) if cfg.hypernet else None
    arms = {name: Arm(name, cfg, config, params, tok, mhash) for name in cfg.arms}
    res = {"config": dataclasses.asdict(cfg), "sessions": [], "canary": {a: [] for a in arms},
           "canary_bytes": canary_bytes, "arms": list(arms)}
    score_seconds = {a: 0.0 for a in arms}
    for a in arms.values():
        res["canary"][a.name].append({name: a.score_canary(params, t) for name, t in canaries.items()})
    for si, s in enumerate(sessions):
        rec = {"sid": s.sid, "start": s.start, "heldout": s.heldout, "bytes": int(s.nbytes.sum()),
               "tokens": int(len(s.tokens)), "roles": s.roles, "nbytes": s.nbytes, "bits": {}}
        plain = [a for a in arms.values() if not a.merges]
        t0 = time.perf_counter()
        for a, bits in zip(plain, score_plain(plain, params, s)):
            rec["bits"][a.name] = bits
        for a in plain:  # one batched pass served them all; charge each its share
            score_seconds[a.name] += (time.perf_counter() - t0) / len(plain)
        if not s.heldout:
            wins = plain[0].segments(s) if plain else []
            for a in plain:
                a.train(s, wins)
        if "merges" in arms:
            a = arms["merges"]
            t0 = time.perf_counter()
            rec["bits"]["merges"], wins = a.score_merged(params, s)
            score_seconds["merges"] += time.perf_counter() - t0
            if not s.heldout:
                a.train(s, wins)
        for a in arms.values():
            res["canary"][a.name].append({name: a.score_canary(params, t) for name, t in canaries.items()})
        res["sessions"].append(rec)
        summary = {n: round(float(rec["bits"][n].sum() / rec["bytes"]), 4) for n in arms}
        log(f"[{si + 1}/{len(sessions)}] {'held-out' if s.heldout else 'train   '} {s.sid[:12]} "
            f"{rec['bytes']} B  bpb {summary}")
    res["timing"] = {a.name: {"updates": a.updates, "train_seconds": a.train_seconds,
                              "updates_per_s": a.updates / a.train_seconds if a.train_seconds else None,
                              "train_tokens_per_s": a.train_tokens / a.train_seconds if a.train_seconds else None,
                              "score_tokens_per_s": sum(r["tokens"] for r in res["sessions"]) / score_seconds[a.name]}
                     for a in arms.values()}
    res["trained_sessions"] = {a.name: sorted(a.trained_sessions) for a in arms.values()}
    res["merge_stats"] = arms["merges"].dyntok.stats(top=10) if "merges" in arms else None
    return res
