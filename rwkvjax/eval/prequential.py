"""Prequential (test-then-train) evaluation of state-tuning arms on a folder of Claude Code sessions.

Sessions are split by time: the latest groups (a session with its subagent transcripts) are the future
and are held out; they are scored when they come, with each arm's current state, and never trained on.
Every other session is scored first (teacher-forced, state carried across the whole session) and then
trained on with the same learner update as `train` (`rwkvjax.train.learner`). Canary texts (general
code and prose absent from the traces) are scored after every session to catch harm elsewhere, and
every session is also compressed by gzip, xz and PPMd, alone and primed with every earlier session in time
order, on the same bytes. The memory arms (`MEMORY_ARMS`) mix another arm's model with a session memory
(`rwkvjax.memory`): every byte is scored before the memory learns it, and the memory of `memory` and
`tuned_memory` has learned every earlier session, held-out ones included, in time order: the history the
compressors are primed with. Protocol: Dawid's prequential principle (https://doi.org/10.2307/2981683).

Each arm is an `ArmSpec` (`rwkvjax.eval.config.ARM_SPECS`); one code path runs any of them: the arms that read
the plain token stream from a model of their own share one batched pass per session, the others (dynamic merges,
periodic resets, memories) are read one by one, and every arm that learns then trains on the session.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import DataError
from rwkvjax.eval import compressors
from rwkvjax.eval.config import ARM_SPECS, ARMS, ArmSpec, EvalConfig, check_arms
from rwkvjax.eval.progress import Progress, as_stored, fingerprint
from rwkvjax.eval.scoring import score_reset, score_stream, score_windows
from rwkvjax.eval.sessions import ROLES, Session, load_sessions, split_by_time
from rwkvjax.io.lock import RunLock
from rwkvjax.merges.dyntok import DynamicTokenizer, for_tokenizer
from rwkvjax.merges.hypernet_io import start_hypernet
from rwkvjax.memory.lm import stream_paths
from rwkvjax.memory.memory import MemorySettings, SessionMemory
from rwkvjax.merges.units import MERGED, PLAIN
from rwkvjax.model.state import State
from rwkvjax.model.units import LN2
from rwkvjax.train.data import Window, stream_windows
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.probe import default_canaries, read_texts
from rwkvjax.train.progress import Reporter
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.trainable import Trainable, init_trainable, initial_state

__all__ = ["ARMS", "EvalConfig", "ROLES", "Session", "load_sessions", "run_eval", "POSITION_BUCKETS"]

POSITION_BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, None))


class Arm:
    """An arm with a model of its own (`ArmSpec.own_model`): its start state S0 and, as its spec says, a learner
    (replay buffer, update gate), dynamic merges with a hypernetwork, a state carried across sessions."""

    stateful = True  # saved between sessions, counted, scored on the canaries under its own name

    def __init__(self, name: str, cfg: EvalConfig, config, params, tok, model_hash: str | None = None, *,
                 spec: ArmSpec | None = None):
        self.name, self.cfg, self.config, self.tok = name, cfg, config, tok
        self.spec = spec = ARM_SPECS[name] if spec is None else spec
        hyper = start_hypernet(config, cfg.hypernet, cfg.seed, model_hash) if spec.merges else None
        self.trainable0 = init_trainable(config, hyper=hyper)
        self.dyntok = for_tokenizer(tok) if spec.merges else None
        self.ctx_len = cfg.ctx_len * (cfg.tbptt_windows if spec.tbptt else 1)
        self.learner = None
        if spec.learns:
            replay = None if spec.replay is None else ReplayBuffer(ReplaySettings(priority=spec.replay),
                                                                   seed=cfg.seed)
            tx = state_tuning_optimizer(self.trainable0, OptimConfig(
                state_lr=cfg.lr, state_lr_final=cfg.lr_final, hyper_lr=cfg.hyper_lr, decay_steps=1000))
            live = 1 if spec.tbptt else cfg.live_per_step  # one long sequence per update
            self.learner = Learner(config, params, self.trainable0, tx, ctx_len=self.ctx_len, live_per_step=live,
                                   replay_per_step=cfg.replay_per_step, replay=replay,
                                   units=MERGED if spec.merges else PLAIN,
                                   n_slots=self.dyntok.settings.n_slots if spec.merges else None, max_traces=None)
        self.gate = None
        if spec.gate:  # the same transaction `train` runs: probe, commit or roll back
            from rwkvjax.train.gate import GateSettings, UpdateGate
            # the canaries `train --canaries` would give it: this run's
            self.gate = UpdateGate(config, params, tok, read_texts(cfg.canaries or default_canaries()),
                                   ctx_len=self.ctx_len, settings=GateSettings(slice_every=0))
            self.learner.projector = self.gate.projector  # as `train`'s learner: projected against the canaries
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

    @property
    def batched(self) -> bool:
        """Read in the session's shared pass over the plain token stream (`score_plain`), a batch row per arm."""
        return not self.spec.merges

    def start_state(self) -> State:
        if self.spec.carry and self.carried is not None:
            return self.carried
        return initial_state(self.trainable, 1)

    def read(self, params, s: Session, paths: dict) -> tuple[np.ndarray, list[Window] | None]:
        """Bits per token of session `s` and the windows it was read in, when they are this arm's own (merges:
        the ones it trains on); a batched arm's bits come from the shared pass (`paths`)."""
        if self.batched:
            return paths[self.name][1], None
        return self.score_merged(params, s)

    def moves(self, s: Session) -> bool:
        """Whether session `s` changes this arm's start state (and so its canary scores)."""
        return self.learner is not None and not s.heldout

    def segments(self, s: Session) -> list[Window]:
        """The session as consecutive windows of <= ctx_len units (dynamic merges applied causally)."""
        return stream_windows(s.sid, s.tokens, self.ctx_len, self.tok, self.dyntok)

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
        """Update on the session's windows; a tbptt arm on its first long window only (the one S0 reaches)."""
        if self.learner is None:
            return
        if self.spec.tbptt:
            wins = self.segments(s)[:1]
        live_all = wins[: self.cfg.max_windows_per_session]
        n = self.learner.live_per_step
        t0 = time.perf_counter()
        if self.gate is not None:
            live_all = [w for w in live_all if not self.gate.sources.divert(w)]  # screened windows are not trained on
            recs = []

            def describe(step, upd):
                self.train_tokens += int(sum(len(w.units) for w in upd.live + upd.replayed))
                recs.append({"step": step})
                return recs[-1]
            train_loop(self.learner, (live_all[i:i + n] for i in range(0, len(live_all), n)), [self.gate],
                       step=0, steps=None, stop=threading.Event(), describe=describe)
            self.trained_sessions.update(w.session for w in self.learner.replay.windows)
        else:
            for i in range(0, len(live_all), n):
                upd = self.learner.update(live_all[i:i + n])
                self.train_tokens += int(sum(len(w.units) for w in upd.live + upd.replayed))
                self.trained_sessions.update(w.session for w in upd.live + upd.replayed)
        jax.block_until_ready(self.learner.trainable.wkv)
        self.train_seconds += time.perf_counter() - t0

    # ----- saved between sessions (`progress.Progress`) -----
    def state_dict(self) -> tuple[dict, dict]:
        """(JSON-able host state, array trees) of everything a session changes in this arm."""
        host = {"carried": self.carried is not None, "updates": self.updates,
                "replay": None if self.learner is None or self.learner.replay is None else self.learner.replay.to_dict(),
                "gate": None if self.gate is None else self.gate.state_dict(),
                "dyntok": None if self.dyntok is None else self.dyntok.state_dict()}
        trees = {}
        if self.learner is not None:
            trees.update(trainable=self.learner.trainable, opt=self.learner.opt_state)
        if self.spec.carry:  # (the start state stands in as the layout before the first session)
            trees["carried"] = self.carried if self.carried is not None else initial_state(self.trainable, 1)
        return host, trees

    def load_state_dict(self, host: dict, leaves: dict[str, list[np.ndarray]]) -> None:
        like = self.state_dict()[1]
        trees = {k: jax.tree.unflatten(jax.tree.structure(like[k]), [jnp.asarray(x) for x in v])
                 for k, v in leaves.items()}
        if self.learner is not None:
            replay = None if host["replay"] is None else ReplayBuffer.from_dict(host["replay"], source=f"arm {self.name}")
            self.learner.load(trees["trainable"], trees["opt"], replay, host["updates"])
        if self.spec.carry and host["carried"]:
            self.carried = trees["carried"]
        if self.gate is not None:
            self.gate.load_state_dict(host["gate"])
        if self.dyntok is not None:
            self.dyntok = DynamicTokenizer.from_state_dict(host["dyntok"], self.tok.decode_bytes)


class MemoryArm:
    """A memory arm (`ArmSpec.memory_of`): the model of its base arm, read from that arm's start state, mixed
    with a session memory, which keeps learning (`ArmSpec.memory_keeps`) or is emptied at every session."""

    stateful = True
    batched = False
    learner = None
    gate = None
    updates = 0

    def __init__(self, name: str, cfg: EvalConfig, config, base: Arm, *, spec: ArmSpec | None = None):
        self.name, self.base = name, base
        self.spec = ARM_SPECS[name] if spec is None else spec
        self.ctx_len = cfg.ctx_len
        self.settings = MemorySettings.for_vocab(config.vocab_size, cfg.memory_mb)
        self.memory = SessionMemory(self.settings)
        self.trained_sessions: set[str] = set()
        self.train_tokens = 0
        self.train_seconds = 0.0
        self._canary_key, self._canary_paths = None, {}

    def _session_memory(self) -> SessionMemory:
        return self.memory if self.spec.memory_keeps else SessionMemory(self.settings)

    def read(self, params, s: Session, paths: dict) -> tuple[np.ndarray, None]:
        """Bits per token of the session under the mixture, each token scored before the memory learns it; the
        model's half is the base arm's row of the shared pass (`paths`)."""
        st, bits_lm = paths[self.base.name]
        mem = self._session_memory()
        t0 = time.perf_counter()
        bits = mem.score(st, bits_lm, s.tokens)
        self.train_seconds += time.perf_counter() - t0
        self.train_tokens += len(s.tokens)
        if self.spec.memory_keeps:
            self.trained_sessions.add(s.sid)
        return bits, None

    def moves(self, s: Session) -> bool:
        """A kept memory learns every session; an emptied one changes only with its base arm's S0."""
        return self.spec.memory_keeps or self.base.moves(s)

    def canary_bits(self, params, canaries: dict[str, np.ndarray]) -> dict:
        """Bits of each canary under the base arm's start state mixed with a copy of this memory (the copy reads
        the canary prequentially and is dropped: canaries never reach the memory)."""
        base = self.base
        key = (base.updates, id(base.trainable))
        if key != self._canary_key:  # the model's opinions change only when the base arm's S0 does
            state = initial_state(base.trainable, 1)
            self._canary_key = key
            self._canary_paths = {}
            for name, toks in canaries.items():
                st, nll, _ = stream_paths(params, base.config, toks, state, nbits=self.settings.nbits,
                                          max_len=self.ctx_len)
                self._canary_paths[name] = (st[0], nll[0].astype(np.float64) / LN2)
        mem = self._session_memory()
        return {name: float(mem.copy().score(st, bits, canaries[name]).sum())
                for name, (st, bits) in self._canary_paths.items()}

    # ----- saved between sessions (`progress.Progress`) -----
    def state_dict(self) -> tuple[dict, dict]:
        if not self.spec.memory_keeps:  # nothing survives a session
            return {}, {}
        meta, arrays = self.memory.state_dict()
        return {"memory": meta}, {"memory": arrays}

    def load_state_dict(self, host: dict, leaves: dict[str, list[np.ndarray]]) -> None:
        if not self.spec.memory_keeps:
            return
        names = sorted(self.memory.state_dict()[1])  # the leaf order of a dict of arrays
        self.memory = SessionMemory.from_state_dict(host["memory"], dict(zip(names, leaves["memory"])),
                                                    source=f"eval arm {self.name}")


class ResetArm:
    """A reset arm (`ArmSpec.reset_of`): its base arm's start state, returned to every --reset-every tokens. It
    owns nothing: its counters, canary scores and saved state are its base arm's."""

    stateful = False
    batched = False

    def __init__(self, name: str, cfg: EvalConfig, base: Arm, *, spec: ArmSpec | None = None):
        self.name, self.base, self.reset_every = name, base, cfg.reset_every
        self.spec = ARM_SPECS[name] if spec is None else spec

    def read(self, params, s: Session, paths: dict) -> tuple[np.ndarray, None]:
        st = initial_state(self.base.trainable, 1)
        return score_reset(params, self.base.config, s.tokens, st, self.reset_every).astype(np.float64) / LN2, None


def build_arms(specs: dict[str, ArmSpec], cfg: EvalConfig, config, params, tok, model_hash: str | None) -> dict:
    """The arms of `specs` (checked by `check_arms`), in its order: those with a model of their own first built,
    then those that read one of them."""
    built = {n: Arm(n, cfg, config, params, tok, model_hash, spec=s) for n, s in specs.items() if s.own_model}
    for n, s in specs.items():
        if s.reset_of:
            built[n] = ResetArm(n, cfg, built[s.reset_of], spec=s)
        elif s.memory_of:
            built[n] = MemoryArm(n, cfg, config, built[s.memory_of], spec=s)
    return {n: built[n] for n in specs}


def score_plain(arms: list[Arm], params, s: Session, nbits: int | None = None) \
        -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Bits per token for several plain-vocabulary arms at once: one batch row per arm's start state; with
    `nbits`, also each row's path stretches for the memory arms (`rwkvjax.memory.lm`)."""
    states = [a.start_state() for a in arms]
    state = jax.tree.map(lambda *x: jnp.concatenate(x, axis=1), *states)
    if nbits is None:
        nll, state = score_stream(params, arms[0].config, s.tokens, state, max_len=arms[0].cfg.ctx_len)
        sts = [None] * len(arms)
    else:
        st, nll, state = stream_paths(params, arms[0].config, s.tokens, state, nbits=nbits,
                                      max_len=arms[0].cfg.ctx_len)
        sts = list(st)
    nll = np.asarray(nll).reshape(len(arms), -1)
    for i, a in enumerate(arms):
        if a.spec.carry:
            a.carried = jax.tree.map(lambda x: x[:, i:i + 1], state)
    return [row.astype(np.float64) / LN2 for row in nll], sts


def score_canaries(arms: list, params, canaries: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Bits of each canary text under each arm: those with a model of their own read it from their start
    states, one batched pass per text (a row per arm); each memory arm with a copy of its memory."""
    own = [a for a in arms if isinstance(a, Arm)]
    out = {a.name: {} for a in own}
    if own:
        state = jax.tree.map(lambda *x: jnp.concatenate(x, axis=1), *[initial_state(a.trainable, 1) for a in own])
        for name, toks in canaries.items():
            nll, _ = score_stream(params, own[0].config, toks, state, max_len=own[0].cfg.ctx_len)
            for a, row in zip(own, np.asarray(nll).reshape(len(own), -1)):
                out[a.name][name] = float(row.sum() / LN2)
    out.update({a.name: a.canary_bits(params, canaries) for a in arms if isinstance(a, MemoryArm)})
    return out


def run_eval(cfg: EvalConfig, model, *, log=print, specs: dict[str, ArmSpec] | None = None,
             progress: bool | None = False) -> dict:
    """Run every arm over the same stream; returns the raw results (see `report.write_eval_report`).

    Each finished session is saved in `<cfg.out>/progress/` with the arms' learners after it (`progress`), so
    an interrupt (KeyboardInterrupt, or SIGTERM through the CLI) loses at most the session in flight, and a
    rerun with the same settings continues from the last finished one with the same results as an unbroken
    run. `cfg.max_sessions` stops after that many sessions of the stream (the split is over all of them).
    `specs`: run these arms (name -> spec, in report order) instead of `cfg.arms`' specs from `ARM_SPECS`; a
    continuation must pass the same. `progress`: the run's progress by tokens with an ETA, naming the session and
    arm at work, on stderr (`progress.Reporter`'s `enabled`: None a bar on a terminal and lines off one; False
    none).
    """
    specs = arm_specs(cfg, specs)
    check_arms(specs)
    with RunLock(cfg.out, "eval"):  # one writer per report folder
        return _run_eval(cfg, model, log, specs, progress)


def arm_specs(cfg: EvalConfig, specs: dict[str, ArmSpec] | None = None) -> dict[str, ArmSpec]:
    """The arms a run runs: `specs`, or by default the table's specs of `cfg.arms`."""
    return {n: ARM_SPECS[n] for n in cfg.arms} if specs is None else dict(specs)


def _own_specs(cfg: EvalConfig, specs: dict[str, ArmSpec]) -> dict | None:
    """The specs a run's fingerprint records: none when they are the table's for `cfg.arms` (so the saved run
    of a command reads the same as before specs existed), else all of them."""
    return None if specs == arm_specs(cfg) else {n: dataclasses.asdict(s) for n, s in specs.items()}


def _run_eval(cfg: EvalConfig, model, log, specs: dict[str, ArmSpec], progress: bool | None) -> dict:
    reporter = Reporter("eval", None, unit="token", enabled=progress)
    try:
        reporter.phase("reading the sessions")
        return _run_sessions(cfg, model, log, specs, reporter)
    finally:
        reporter.close()


def _run_sessions(cfg: EvalConfig, model, log, specs: dict[str, ArmSpec], reporter: Reporter) -> dict:
    config, params, tok = model.arch, model.params, model.tokenizer
    sessions = load_sessions(cfg.traces, tok)
    if len(sessions) < 2:
        raise DataError(f"{cfg.traces}: {len(sessions)} session(s); the evaluation needs at least 2")
    split_by_time(sessions, cfg.heldout_fraction)
    texts = read_texts(cfg.canaries or default_canaries())
    canaries = {name: np.asarray(tok.encode(t), np.int32) for name, t in texts.items()}
    store = Progress(cfg.out)
    mhash = model.hash
    fp = fingerprint(cfg, mhash, dataclasses.asdict(config), sessions, texts, arm_specs=_own_specs(cfg, specs))
    saved = store.open(fp, cfg)
    limit = len(sessions) if cfg.max_sessions is None else min(cfg.max_sessions, len(sessions))
    done = store.done() if saved is not None else 0
    records = store.read_sessions(min(done, limit))
    if done >= limit:
        log(f"{store.dir}: {done} of {len(sessions)} sessions already done; nothing to compute")
        return results(cfg, store.run, records, specs=specs)
    names = list(specs)
    arms = build_arms(specs, cfg, config, params, tok, mhash if cfg.hypernet else None)
    kept = {n: a for n, a in arms.items() if a.stateful}  # what is saved, counted and scored on the canaries
    # the work left, in tokens: a session's time grows with its length (the first one also compiles)
    reporter.set_total(sum(len(s.tokens) for s in sessions[done:limit]))
    if saved is None:
        reporter.phase("scoring the canaries before any session (compiling the model's forward)")
        start = score_canaries(list(kept.values()), params, canaries)
        store.start(fp, canary_start=start, canary_bytes={n: len(t.encode()) for n, t in texts.items()},
                    sessions_total=len(sessions))
    score_seconds = {n: 0.0 for n in names}
    if done:
        store.load_arms(kept)
        last = records[-1]
        score_seconds.update(last["score_seconds"])
        for a in kept.values():
            c = last["counters"][a.name]
            a.train_tokens, a.train_seconds = c["train_tokens"], c["train_seconds"]
            a.trained_sessions = {sid for r in records for sid in r["counters"][a.name]["trained_new"]}
        log(f"{store.dir}: continuing after {done} finished session(s)")
    # the bytes of every earlier session, in time order: the compressors' counterpart of the memory arms' history
    prime = b"".join(s.text.encode() for s in sessions[:done])
    tokens_done = 0
    for si in range(done, limit):
        s = sessions[si]
        t_session = time.perf_counter()
        where = f"session {si + 1}/{len(sessions)} ({'held-out' if s.heldout else 'train'} {s.sid[:12]})"
        rec = score_session(s, arms, model, tok, cfg, prime, score_seconds,
                            note=lambda text, where=where: reporter.phase(f"{where}: {text}"))
        prime += s.text.encode()
        rec["bits"] = {n: as_stored(b) for n, b in rec["bits"].items()}
        # only a learner that has just trained has a new start state, only a memory that learned (or whose
        # model moved) a new mixture; the others' canary scores stay as they were
        moved = [a for a in kept.values() if a.moves(s)]
        reporter.phase(f"{where}: scoring the canaries")
        before = records[-1]["canary"] if records else store.run["canary_start"]
        rec["canary"] = {**before, **score_canaries(moved, params, canaries)}
        rec["score_seconds"] = dict(score_seconds)
        rec["merge_stats"] = next((a.dyntok.stats(top=10) for a in kept.values() if a.spec.merges), None)
        rec["seconds"] = time.perf_counter() - t_session
        store.write_session(si, rec)
        store.save_arms(si + 1, kept)  # after the session file: `done` never counts a session not on disk
        records.append(rec)
        tokens_done += len(s.tokens)
        reporter.update(tokens_done, {"sessions": f"{si + 1}/{limit}"})
        summary = {n: round(float(rec["bits"][n].sum() / rec["bytes"]), 4) for n in names}
        gz = rec["compressors"]["gzip -9"]["alone"] / rec["bytes"]
        log(f"[{si + 1}/{len(sessions)}] {'held-out' if s.heldout else 'train   '} {s.sid[:12]} "
            f"{rec['bytes']} B  {rec['seconds']:.1f} s  bpb {summary}  gzip -9 {gz:.4f}")
    return results(cfg, store.run, records, specs=specs)


def score_session(s: Session, arms: dict, model, tok, cfg: EvalConfig, prime: bytes,
                  score_seconds: dict[str, float], *, note: Callable[[str], None] | None = None) -> dict:
    """Score session `s` with every arm, then (a training session) train the arms that learn on it. `note` is
    told which arm is doing what (the progress line names it)."""
    note = (lambda text: None) if note is None else note
    params = model.params
    note("compressing it with gzip, xz and PPMd")
    rec = {"sid": s.sid, "group": s.group, "start": s.start, "heldout": s.heldout, "bytes": int(s.nbytes.sum()),
           "tokens": int(len(s.tokens)), "roles": s.roles, "nbytes": s.nbytes, "bits": {},
           "compressors": compressors.table(s.text.encode(), prime)}
    kept = [a for a in arms.values() if a.stateful]
    before = {a.name: set(a.trained_sessions) for a in kept}
    batched = [a for a in arms.values() if a.batched]
    # the memories read path stretches of the plain pass (all of them the same settings: one vocabulary, one size)
    nbits = next((a.settings.nbits for a in arms.values() if a.spec.memory_of), None)
    paths = {}
    if batched:
        note(f"scoring arms {', '.join(a.name for a in batched)} in one pass")
        t0 = time.perf_counter()
        all_bits, all_st = score_plain(batched, params, s, nbits)
        paths = {a.name: (st, bits) for a, bits, st in zip(batched, all_bits, all_st)}
        for a in batched:  # one batched pass served them all; charge each its share
            score_seconds[a.name] += (time.perf_counter() - t0) / len(batched)
    own_wins = {}
    for a in arms.values():  # a memory's own time only: its model's forward is its base arm's, above
        if not a.batched:
            note(f"arm {a.name}: scoring")
        t0 = time.perf_counter()
        rec["bits"][a.name], own_wins[a.name] = a.read(params, s, paths)
        score_seconds[a.name] += time.perf_counter() - t0
    if not s.heldout:
        wins = stream_windows(s.sid, s.tokens, cfg.ctx_len, tok)
        for a in arms.values():
            if a.spec.learns:  # merges: the windows it read, its dynamic merges as they were then
                note(f"arm {a.name}: training")
                a.train(s, wins if own_wins[a.name] is None else own_wins[a.name])
    rec["counters"] = {a.name: {"updates": a.updates, "train_seconds": a.train_seconds,
                                "train_tokens": a.train_tokens,
                                "gate": dict(a.gate.counts) if a.gate is not None else None,
                                "trained_new": sorted(a.trained_sessions - before[a.name])}
                       for a in kept}
    return rec


def results(cfg: EvalConfig, run: dict, records: list[dict], *, interrupted: bool = False,
            specs: dict[str, ArmSpec] | None = None) -> dict:
    """The raw results the report reads, from the run's description and its finished sessions' records (a reset
    arm's counters and canary scores are its base arm's)."""
    specs = arm_specs(cfg, specs)
    names = list(specs)
    own = lambda n: specs[n].reset_of or n
    res = {"config": dataclasses.asdict(cfg), "sessions": records, "canary_bytes": run["canary_bytes"],
           "arms": names, "compressors": list(compressors.COMPRESSORS),
           "canary": {n: [run["canary_start"][own(n)]] + [r["canary"][own(n)] for r in records] for n in names},
           "progress": {"scored": len(records), "total": run["sessions_total"], "max_sessions": cfg.max_sessions,
                        "interrupted": interrupted, "seconds": [r["seconds"] for r in records]}}
    last = records[-1] if records else {"counters": {}, "score_seconds": {}, "merge_stats": None}
    tokens = sum(r["tokens"] for r in records)
    res["timing"] = {}
    for n in names:
        c = None if specs[n].reset_of else last["counters"].get(n)
        upd, secs = (c["updates"], c["train_seconds"]) if c else (0, 0.0)
        res["timing"][n] = {
            "updates": upd, "train_seconds": secs, "gate": c["gate"] if c else None,
            "updates_per_s": upd / secs if secs else None,
            "train_tokens_per_s": c["train_tokens"] / secs if c and secs else None,
            "score_tokens_per_s": tokens / max(last["score_seconds"].get(n, 0.0), 1e-9)}
    res["trained_sessions"] = {n: sorted({sid for r in records for sid in r["counters"][own(n)]["trained_new"]})
                               for n in names}
    res["merge_stats"] = last["merge_stats"]
    return res


def saved_results(cfg: EvalConfig, *, interrupted: bool = False, specs: dict[str, ArmSpec] | None = None
                  ) -> dict | None:
    """The results of the sessions finished so far in `cfg.out` (no model needed); None before the first.
    `specs`: as given to `run_eval`."""
    specs = arm_specs(cfg, specs)
    store = Progress(cfg.out)
    run = store.load(cfg, arm_specs=_own_specs(cfg, specs))
    if run is None:
        return None
    limit = store.done() if cfg.max_sessions is None else min(cfg.max_sessions, store.done())
    return results(cfg, run, store.read_sessions(limit), interrupted=interrupted, specs=specs) if limit else None
