"""Prequential (test-then-train) evaluation of state-tuning arms on a folder of Claude Code sessions.

Sessions are ordered by start time. Every k-th session is a forward held-out session: it is scored when
it comes, with each arm's current S0, and never trained on. Every other session is scored first
(teacher-forced, state carried across the whole session) and then trained on. Canary texts (general
code and prose absent from the traces) are scored after every update round to catch harm elsewhere.
Protocol: ../shared/reference/METHODS.md §7.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ingest.dyntok import DynamicTokenizer, DynTokSettings, digit_protected
from ingest.render import RenderOptions, group_sessions, render_session
from ingest.replay import ReplayBuffer, ReplaySettings
from ingest.stream import collect
from rwkvjax.batching import MERGED, make_batch
from rwkvjax.checkpoint import params_hash
from rwkvjax.hypernet_io import start_hypernet
from rwkvjax.objective import PLAIN
from rwkvjax.optim import OptimConfig, make_optimizer
from rwkvjax.scoring import score_stream, score_windows
from rwkvjax.state import State, zero_state
from rwkvjax.train_step import make_eval_fn, make_train_step
from rwkvjax.trainable import init_trainable
from rwkvjax.windows import Window, stream_windows

LN2 = math.log(2.0)
ARMS = ("frozen", "carry", "tuned", "tuned_replay", "tuned_replay_reducible", "merges")
POSITION_BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, None))
ROLES = ("user", "assistant", "thinking", "tool_input", "tool_output", "boilerplate")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    traces: str
    out: str
    k: int = 3                       # every k-th session (by start time) is held out
    ctx_len: int = 512               # training window and longest scoring call
    live_per_step: int = 2
    replay_per_step: int = 2
    max_windows_per_session: int = 32  # training windows taken from each session (its start first)
    lr: float = 0.1
    lr_final: float = 0.01
    hyper_lr: float = 1e-3
    hypernet: str | None = None      # the merges arm starts from this `python cli.py hypernet` file
    arms: tuple[str, ...] = ARMS
    canaries: tuple[str, ...] = ()
    seed: int = 0
    bootstrap: int = 10_000


@dataclasses.dataclass
class Session:
    sid: str
    start: str
    text: str
    tokens: np.ndarray      # base tokens of the rendered text
    roles: np.ndarray       # role index per token
    nbytes: np.ndarray      # UTF-8 bytes per token
    heldout: bool = False


def load_sessions(traces: str, tok, opts: RenderOptions = RenderOptions()) -> list[Session]:
    """Ingest (redacted), render and tokenize every session; ordered by its first timestamp."""
    events, _ = asyncio.run(collect("replay", paths=[traces], reader="python"))
    sessions = []
    for sid, evs in group_sessions(events).items():
        r = render_session(evs, opts)
        if not r.text:
            continue
        toks, roles, nb = [], [], []
        for span in r.spans:
            ids = tok.encode(r.text[span.start:span.end])
            toks.extend(ids)
            roles.extend([ROLES.index(span.role)] * len(ids))
            nb.extend(len(tok.decode_bytes([i])) for i in ids)
        start = min((e.timestamp for e in evs if e.timestamp), default="")
        sessions.append(Session(sid, start, r.text, np.asarray(toks, np.int32), np.asarray(roles, np.int8),
                                np.asarray(nb, np.int32)))
    sessions.sort(key=lambda s: (s.start, s.sid))
    return sessions


def canary_texts(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        text = Path(p).read_text(encoding="utf-8")
        out[Path(p).name] = text
    return out


class Arm:
    """One arm's learner: its trainable S0 (+ hypernetwork), optimizer, replay buffer and tokenizer state."""

    def __init__(self, name: str, cfg: EvalConfig, config, tok, model_hash: str | None = None):
        self.name, self.cfg, self.config, self.tok = name, cfg, config, tok
        self.trains = name not in ("frozen", "carry")
        self.merges = name == "merges"
        self.replay = None
        if name in ("tuned_replay", "tuned_replay_reducible", "merges"):
            self.replay = ReplayBuffer(ReplaySettings(
                priority="surprise" if name == "tuned_replay" else "reducible"), seed=cfg.seed)
            self.replay_windows: list[dict] = []
        hyper = start_hypernet(config, cfg.hypernet, cfg.seed, model_hash) if self.merges else None
        self.trainable0 = init_trainable(config, hyper=hyper)
        self.trainable = jax.tree.map(jnp.copy, self.trainable0)  # the step donates it; trainable0 stays
        self.dyntok = None
        if self.merges:
            V = config.vocab_size
            self.dyntok = DynamicTokenizer(DynTokSettings(v_base=V, protected=digit_protected(tok.decode_bytes, V)),
                                           tok.decode_bytes)
        if self.trains:
            self.tx = make_optimizer(self.trainable0, OptimConfig(
                state_lr=cfg.lr, state_lr_final=cfg.lr_final, hyper_lr=cfg.hyper_lr, decay_steps=1000))
            self.opt = self.tx.init(self.trainable0)
            units = MERGED if self.merges else PLAIN
            self.step = make_train_step(config, self.tx, units=units, max_traces=None)
            self.eval_fn = make_eval_fn(config, units=units)
        self.carried: State | None = None
        self.trained_sessions: set[str] = set()
        self.updates = 0
        self.train_tokens = 0
        self.train_seconds = 0.0

    def start_state(self) -> State:
        if self.name == "carry" and self.carried is not None:
            return self.carried
        st = zero_state(self.config, 1)
        return st._replace(wkv=jnp.broadcast_to(self.trainable.wkv[:, None], st.wkv.shape))

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


    def train(self, params, s: Session, wins: list[Window]):
        if not self.trains:
            return
        cfg = self.cfg
        live_all = wins[: cfg.max_windows_per_session]
        B = cfg.live_per_step + (cfg.replay_per_step if self.replay is not None else 0)
        t0 = time.perf_counter()
        for i in range(0, len(live_all), cfg.live_per_step):
            live = live_all[i:i + cfg.live_per_step]
            idx, isw = (np.zeros(0, int), np.zeros(0))
            if self.replay is not None and len(self.replay):
                idx, isw = self.replay.sample(min(cfg.replay_per_step, len(self.replay)))
            rep = [Window.from_dict(self.replay_windows[j]["window"]) for j in idx]
            batch = make_batch(live + rep, [1.0] * len(live) + list(isw), batch_size=B, ctx_len=cfg.ctx_len,
                               n_slots=self.dyntok.settings.n_slots if self.merges else None)
            frozen_nll = None
            if self.replay is not None and self.replay.settings.priority == "reducible":
                _, mf = self.eval_fn(self.trainable0, params, batch)
                frozen_nll = np.asarray(mf["window_nll"])
            self.trainable, self.opt, m = self.step(self.trainable, self.opt, params, batch)
            wnll = np.asarray(m["window_nll"])
            self.updates += 1
            self.train_tokens += int(sum(len(w.units) for w in live + rep))
            self.trained_sessions.update(w.session for w in live + rep)
            if self.replay is not None:
                for j, w in enumerate(live):
                    f = None if frozen_nll is None else float(frozen_nll[j])
                    k = self.replay.add(w.units, float(wnll[j]), f)
                    if k is not None:
                        rec = {"window": w.to_dict(), "nll_frozen": f}
                        (self.replay_windows.append(rec) if k == len(self.replay_windows)
                         else self.replay_windows.__setitem__(k, rec))
                if len(idx):
                    fz = None
                    if frozen_nll is not None:
                        fz = [self.replay_windows[j]["nll_frozen"] for j in idx]
                    self.replay.update(idx, wnll[len(live):len(live) + len(idx)], fz)
        jax.block_until_ready(self.trainable.wkv)
        self.train_seconds += time.perf_counter() - t0

    def score_canary(self, params, tokens: np.ndarray) -> float:
        st = zero_state(self.config, 1)
        st = st._replace(wkv=jnp.broadcast_to(self.trainable.wkv[:, None], st.wkv.shape))
        nll, _ = score_stream(params, self.config, tokens, st, max_len=self.cfg.ctx_len)
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
    from rwkvjax.tokenizer import for_vocab
    config, params = model
    tok = for_vocab(config.vocab_size)
    sessions = load_sessions(cfg.traces, tok)
    if len(sessions) < 2:
        raise ValueError(f"{cfg.traces}: {len(sessions)} session(s); the evaluation needs at least 2")
    for i, s in enumerate(sessions):
        s.heldout = (i + 1) % cfg.k == 0
    canaries = {name: np.asarray(tok.encode(t), np.int32) for name, t in canary_texts(cfg.canaries).items()}
    canary_bytes = {name: len(t.encode()) for name, t in canary_texts(cfg.canaries).items()}
    for name in cfg.arms:
        if name not in ARMS:
            raise ValueError(f"unknown arm {name!r}; choose from {ARMS}")
    if cfg.hypernet and "merges" not in cfg.arms:
        raise ValueError(f"--hypernet {cfg.hypernet} is only used by the 'merges' arm, which --arms leaves out")
    mhash = params_hash(params) if cfg.hypernet else None
    arms = {name: Arm(name, cfg, config, tok, mhash) for name in cfg.arms}
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
                a.train(params, s, wins)
        if "merges" in arms:
            a = arms["merges"]
            t0 = time.perf_counter()
            rec["bits"]["merges"], wins = a.score_merged(params, s)
            score_seconds["merges"] += time.perf_counter() - t0
            if not s.heldout:
                a.train(params, s, wins)
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
