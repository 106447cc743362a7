"""Test-time training in the server: between turns of a conversation, a few gated state-tuning steps on that
conversation adapt the conversation's own start state, stored as `conv/<model>/<session>` (forkable like any
state). Shared states (the base, project states) are never written: only consolidation folds anything back.
With the session memory on, the conversation's memory (the turn's scratch memory: it read the prompt and
learned the reply) is stored with that state, so the next turn of the conversation starts from it.

One learner and one update gate serve every conversation (their compiled steps are shared); a conversation's
state is loaded into them for its steps, probed against the canaries after each step (a step that damages
them is rolled back), and written to the store. A new turn of a conversation waits, boundedly, for its
pending steps, so it starts from the state they made.

The work is bounded (`TuningQueue`): one place in line per conversation (a newer turn replaces its queued older
one: its text holds the older one's), a fixed number of places (a new conversation's request is refused with 429
while all are taken), and `stop` discards what waits and ends the running turn without writing it. The stored
conversations are bounded too: beyond `max_conversations` the least recently tuned are removed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from typing import Callable

import jax.numpy as jnp

from rwkvjax.io.states import LISTED
from rwkvjax.serve.config import DEFAULT_TTT_MAX_CONVERSATIONS, DEFAULT_TTT_QUEUE
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
    max_queued: int = DEFAULT_TTT_QUEUE  # conversations waiting for their steps at most (argued in serve.config)
    max_conversations: int = DEFAULT_TTT_MAX_CONVERSATIONS  # conversation states kept (least recently tuned go)


class TuningQueue:
    """Turns waiting to be tuned, run one at a time by a worker thread calling `tune(name, *args, stop=event)`.

    Bounded, and coalesced per conversation: a turn of a conversation already waiting replaces the waiting one in
    its place in line (the newer text is the whole conversation so far, so nothing is lost), so one conversation
    holds at most one place (and the one running). `admits(name)` says whether a turn of `name` would get a place;
    a turn submitted when none is left is skipped, counted and logged in one line (its text is also in the
    conversation's next turn, which trains on everything its state has not seen). `stop` discards the waiting
    turns, sets the event the running `tune` watches, and waits for it."""

    def __init__(self, tune: Callable[..., object], *, max_queued: int, on_result: Callable[[object], None]):
        self._tune, self._on_result, self.max_queued = tune, on_result, max_queued
        self._waiting: collections.OrderedDict[str, tuple] = collections.OrderedDict()  # oldest first
        # conversations with a turn waiting or running (an entry goes when they are done: the server may see
        # millions of conversations)
        self.pending: dict[str, threading.Event] = {}
        self.running: str | None = None
        self.coalesced = self.skipped = self.discarded = 0
        self.stopping = threading.Event()  # set by `stop`: the running turn ends early and writes nothing
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ttt", daemon=True)
        self._thread.start()

    def admits(self, name: str) -> bool:
        with self._cv:
            return not self.stopping.is_set() and (name in self._waiting or len(self._waiting) < self.max_queued)

    def submit(self, name: str, *args) -> bool:
        """Queue a turn of conversation `name` -> False when it was skipped (the queue full, or stopping)."""
        with self._cv:
            if self.stopping.is_set():  # a turn answered while the server stops: counted with the discarded
                self.discarded += 1
                return False
            if name in self._waiting:
                self._waiting[name] = args  # keeps its place in line
                self.coalesced += 1
            elif len(self._waiting) >= self.max_queued:
                self.skipped += 1
                log.warning("test-time training of %s skipped: %d conversations already wait (--ttt-queue); its "
                            "next turn trains on this one's text too (%d skipped so far)", name,
                            len(self._waiting), self.skipped)
                return False
            else:
                self._waiting[name] = args
            self.pending.setdefault(name, threading.Event()).clear()
            self._cv.notify()
        return True

    def wait(self, name: str, timeout_s: float) -> float:
        """Block until conversation `name` has nothing waiting or running (at most `timeout_s`) -> seconds."""
        with self._cv:
            ev = self.pending.get(name)
        if ev is None:
            return 0.0
        t0 = time.perf_counter()
        ev.wait(timeout_s)
        return time.perf_counter() - t0

    def stats(self) -> dict:
        with self._cv:
            # whether a turn runs, not whose: session names are the clients' own
            return {"queued": len(self._waiting), "max_queued": self.max_queued, "running": self.running is not None,
                    "coalesced": self.coalesced, "skipped": self.skipped, "discarded": self.discarded}

    def stop(self, timeout_s: float = 60.0) -> None:
        with self._cv:
            if self._waiting:
                log.warning("stopping: %d waiting turn(s) of test-time training discarded (their conversations "
                            "keep the states of their last tuned turn)", len(self._waiting))
            self.discarded += len(self._waiting)
            self._waiting.clear()
            self.stopping.set()
            for name in [n for n in self.pending if n != self.running]:
                self.pending.pop(name).set()  # a turn waiting for them goes on at once
            self._cv.notify_all()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self.stopping.is_set():
                    self._cv.wait()
                if self.stopping.is_set():
                    return
                name, args = self._waiting.popitem(last=False)
                self.running = name
            try:
                self._on_result(self._tune(name, *args, stop=self.stopping))
            except Exception:  # a failed turn must not take the server down; it is logged with its traceback
                log.exception("test-time training of %s failed", name)
            finally:
                with self._cv:
                    self.running = None
                    if name not in self._waiting:
                        ev = self.pending.pop(name, None)
                        if ev is not None:
                            ev.set()


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
        self.log: collections.deque[dict] = collections.deque(maxlen=settings.log_turns)  # the last turns tuned
        self.evicted = 0  # conversation states removed to keep `max_conversations`
        self._writing = threading.Lock()  # a turn's last check of `stop` and its write are one step for `stop`
        self.queue = TuningQueue(self.tune, max_queued=settings.max_queued, on_result=self._record)

    @property
    def pending(self) -> dict[str, threading.Event]:
        """Conversations with a turn waiting or running (what each has been trained on is in its state's record)."""
        return self.queue.pending

    # ----- called by the server -----
    def submit(self, name: str, parent: str | None, text: str, memory=None, mark: dict | None = None) -> None:
        """Tune conversation `name` (started from state `parent`, None: the base) on its text so far. `memory`:
        (`mixture.read_mark`), kept in the state's record. Coalesced with a waiting turn of the same
        conversation; skipped (False, one warning line, counted) when the queue is full."""
        return self.queue.submit(name, parent, text, memory, mark)

    def admits(self, name: str) -> bool:
        """Whether a turn of conversation `name` would find a place in the queue (the server's 429 otherwise)."""
        return self.queue.admits(name)

    def retry_after_s(self) -> int:
        """What a refused client is told to wait: the mean time of the last turns tuned (one place frees up)."""
        recent = [r["seconds"] for r in list(self.log)[-8:]]
        return max(1, math.ceil(sum(recent) / len(recent))) if recent else 5

    def wait(self, name: str) -> float:
        """Block until conversation `name` has no pending steps (at most `wait_s`); returns seconds waited."""
        return self.queue.wait(name, self.s.wait_s)

    def stats(self) -> dict:
        """For `/health`: the queue's state and what was coalesced, skipped, discarded and evicted."""
        return {**self.queue.stats(), "evicted": self.evicted,
                "max_conversations": self.s.max_conversations}

    def stop(self) -> None:
        """Discard the waiting turns, end the running one (nothing of it is written) and wait for the worker."""
        with self._writing:
            self.queue.stopping.set()  # from here no turn begins to write its state
        self.queue.stop()

    def _record(self, result: dict) -> None:
        if result is not None:
            self.log.append(result)

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

    def tune(self, name: str, parent: str | None, text: str, memory=None, mark: dict | None = None, *,
             stop: threading.Event | None = None) -> dict | None:
        """Tune conversation `name` on `text` and store its state -> the turn's record; None when `stop` was set
        before the state was written (a stopping server writes nothing more)."""
        t0 = time.perf_counter()
        stop = stop if stop is not None else threading.Event()
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
        train_loop(self.learner, iter(batches), [self.gate], step=0, steps=self.s.steps, stop=stop,
                   describe=describe)
        with self._writing:
            if stop.is_set():
                return None
            rec = self._store(name, tokens, recs, parent_id, memory, mark)
            self._evict(keep=rec.name)
        return {"conversation": name, "state_id": rec.id, "tokens": len(tokens), "steps": len(recs),
                "accepted": rec.source["accepted"], "decisions": [r.get("gate") for r in recs],
                "reasons": [r.get("gate_reason") for r in recs if r.get("gate_reason")],
                "seconds": time.perf_counter() - t0}

    def _store(self, name, tokens, recs, parent_id, memory, mark):
        accepted = sum(r.get("gate") == "accepted" for r in recs)
        tr = to_host(self.learner.trainable)
        source = {"ttt": name, "tokens": len(tokens), "steps": len(recs), "accepted": accepted, **(mark or {})}
        rec = self.store.put(state_safe_name(name), tr.wkv, base_hash=self.base_hash, tokenizer=self.tokenizer_id,
                             replace=True, parent=parent_id, source=source, att_shift=tr.att_shift,
                             ffn_shift=tr.ffn_shift, memory=memory, conversation=True)
        return rec

    def _evict(self, keep: str) -> None:
        """Keep at most `max_conversations` conversation states: the least recently tuned go, in one batch and
        one log line."""
        gone = self.store.evict_conversations(self.s.max_conversations, keep=keep)
        if gone:
            self.evicted += len(gone)
            names = [r.name for r in gone]
            log.info("evicted %d conversation state(s), the least recently tuned beyond --ttt-max-conversations "
                     "%d: %s%s", len(gone), self.s.max_conversations, ", ".join(names[:LISTED]),
                     f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
