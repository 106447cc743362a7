"""Test-time training in the server: between turns of a conversation, a few gated state-tuning steps on that
conversation adapt the conversation's own start state, stored as `conv/<model>/<session>` (forkable like any
state). Shared states (the base, project states) are never written: only consolidation folds anything back.
With the session memory on, the conversation's memory (the turn's scratch memory: it read the prompt and
learned the reply) is stored with that state, so the next turn of the conversation starts from it.

One learner and one update gate serve every conversation (their compiled steps are shared); a conversation's
state is loaded into them for its steps, probed against the canaries after each step (a step that damages
them is rolled back), and written to the store. A new turn of a conversation waits, boundedly, for its
pending steps, so it starts from the state they made.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time

import jax.numpy as jnp

from rwkvjax.train.data import stream_windows
from rwkvjax.train.gate import GateSettings, UpdateGate
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.probe import default_canaries, read_texts
from rwkvjax.train.projects import state_safe_name
from rwkvjax.train.step import to_host
from rwkvjax.train.trainable import init_trainable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TTTSettings:
    steps: int = 4         # gated updates per turn
    lr: float = 0.05       # AdamW learning rate on the conversation's start state
    ctx_len: int = 256     # tokens per training window
    windows: int = 2       # windows per update: the newest, and the one before it
    wait_s: float = 30.0   # a new turn waits at most this long for its conversation's pending steps
    log_turns: int = 256   # the last turns' records kept in memory (`ConversationTuner.log`)


class ConversationTuner:
    def __init__(self, config, params, tok, store, *, base_hash: str, tokenizer_id: str,
                 settings: TTTSettings = TTTSettings(), canaries: dict[str, str] | None = None):
        self.config, self.tok, self.store, self.s = config, tok, store, settings
        self.base_hash, self.tokenizer_id = base_hash, tokenizer_id
        tr0 = init_trainable(config)
        self.tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=settings.lr, state_lr_final=settings.lr,
                                                          decay_steps=1))
        self.learner = Learner(config, params, tr0, self.tx, ctx_len=settings.ctx_len,
                               live_per_step=settings.windows, wkv_impl="chunked")
        self.gate = UpdateGate(config, params, tok, canaries or read_texts(default_canaries()),
                               ctx_len=settings.ctx_len, settings=GateSettings(slice_every=0))
        self.learner.projector = self.gate.projector  # updates projected against the canary gradient the gate keeps
        # conversations with steps queued or running (an entry goes when they are done: the server may see
        # millions of conversations; what each has been trained on is in its stored state's record)
        self.pending: dict[str, threading.Event] = {}
        self.log: collections.deque[dict] = collections.deque(maxlen=settings.log_turns)  # the last turns tuned
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ttt", daemon=True)
        self._thread.start()

    # ----- called by the server -----
    def submit(self, name: str, parent: str | None, text: str, memory=None, mark: dict | None = None) -> None:
        """Tune conversation `name` (started from state `parent`, None: the base) on its text so far. `memory`:
        the conversation's session memory, stored with its state; `mark`: what that memory has read
        (`mixture.read_mark`), kept in the state's record."""
        with self._lock:
            ev = self.pending.setdefault(name, threading.Event())
            ev.clear()
        self._jobs.put((name, parent, text, memory, mark))

    def wait(self, name: str) -> float:
        """Block until conversation `name` has no pending steps (at most `wait_s`); returns seconds waited."""
        with self._lock:
            ev = self.pending.get(name)
        if ev is None:
            return 0.0
        t0 = time.perf_counter()
        ev.wait(self.s.wait_s)
        return time.perf_counter() - t0

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)

    # ----- the worker -----
    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            name = job[0]
            try:
                self.log.append(self.tune(*job))
            except Exception:  # a failed turn must not take the server down; it is logged with its traceback
                log.exception("test-time training of %s failed", name)
            finally:
                with self._lock:
                    if self._jobs.empty() or all(j is None or j[0] != name for j in list(self._jobs.queue)):
                        self.pending.pop(name).set()

    def _start(self, name: str, parent: str | None):
        """The conversation's state if it has one, else its parent's, else zeros; the parent's id; and the tokens
        of the conversation its state was trained on (0 without one)."""
        names = {r.name: r for r in self.store.records()}
        parent_rec = names.get(parent) if parent else None
        own = names.get(state_safe_name(name))
        src = own or parent_rec
        tr = init_trainable(self.config)
        if src is not None:
            _, arr = self.store.load(src.id, base_hash=self.base_hash, tokenizer=self.tokenizer_id)
            tr = dataclasses.replace(tr, wkv=jnp.asarray(arr["wkv"]))
        done = int((own.source or {}).get("tokens", 0)) if own is not None else 0
        return tr, None if parent_rec is None else parent_rec.id, done

    def tune(self, name: str, parent: str | None, text: str, memory=None, mark: dict | None = None) -> dict:
        t0 = time.perf_counter()
        tokens = self.tok.encode(text)
        trainable, parent_id, done = self._start(name, parent)
        # the new text, and one window of what came before it for context
        start = max(0, min(done, len(tokens)) - self.s.ctx_len)
        windows = stream_windows(name, tokens[start:], self.s.ctx_len, self.tok)
        self.learner.load(trainable, self.tx.init(trainable), None, 0)
        self.gate.switch(name, self.learner.trainable)
        recs = []

        def describe(step, upd):
            rec = {"step": step, "grad_norm": upd.metrics["grad_norm"]}
            recs.append(rec)
            return rec

        # the newest windows first: what the next turn most likely continues
        batches = [windows[max(0, len(windows) - self.s.windows - i):len(windows) - i] or windows[-1:]
                   for i in range(self.s.steps)]
        train_loop(self.learner, iter(batches), [self.gate], step=0, steps=self.s.steps,
                   stop=threading.Event(), describe=describe)
        accepted = sum(r.get("gate") == "accepted" for r in recs)
        tr = to_host(self.learner.trainable)
        source = {"ttt": name, "tokens": len(tokens), "steps": len(recs), "accepted": accepted, **(mark or {})}
        rec = self.store.put(state_safe_name(name), tr.wkv, base_hash=self.base_hash, tokenizer=self.tokenizer_id,
                             replace=True, parent=parent_id, source=source, att_shift=tr.att_shift,
                             ffn_shift=tr.ffn_shift, memory=memory, conversation=True)
        return {"conversation": name, "state_id": rec.id, "tokens": len(tokens), "steps": len(recs),
                "accepted": accepted, "decisions": [r.get("gate") for r in recs],
                "reasons": [r.get("gate_reason") for r in recs if r.get("gate_reason")],
                "seconds": time.perf_counter() - t0}
