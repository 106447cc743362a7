"""The training loop: take the next live windows, make one learner update, run the hooks. Nothing else.

The one loop of state tuning (`train.run`), pretraining (`train.pretrain`), offline hypernetwork training
(`train.hypernet`) and sleep consolidation (`train.consolidate`). A learner is anything with `update(batch)`
(and, for a hook that may veto, `snapshot()` and `rollback(snapshot)`); `Learner` is state tuning's.

Hooks are called in the order given, each every `every` steps (and once at the end). A hook that may
undo a step (`may_veto = True`, e.g. an update gate) sees every step before the others; the loop
snapshots the learner before each step while one is registered, and a returned `Veto` rolls the
update back, and calls `undo` on the hooks that may veto and accepted it before (what they changed with
the step, e.g. the session memory's learning, is part of the transaction). The record the later hooks
see (and log) says so.

Dispatch runs at most `DISPATCH_AHEAD` steps ahead of the device: after dispatching a step the loop waits for
the outputs of the one `DISPATCH_AHEAD` before it. Unbounded, a learner whose update returns device values
(pretraining's) queues step after step, and a stop then waits for the whole queue (70 s were seen) before it
can save.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from typing import Callable, Iterable, Sequence

import jax

from rwkvjax.train.data import Window
from rwkvjax.train.learner import Learner, Snapshot, Update
from rwkvjax.train.signals import note_step

# Steps dispatched past the newest one finished on the device. Pretraining a tiny model (1 layer, n_embd 64,
# ctx 16, batch 2) on a busy 2-core CPU, 6 interleaved runs of 180 steps each, median ms/step: unbounded 3.2,
# 1 ahead 3.5, 0 ahead 3.6 (fastest runs 2.5, 2.8, 2.7): about 0.3 ms a step, within the runs' spread, for a stop
# that waits for at most two steps. Larger steps hide the wait better still.
DISPATCH_AHEAD = 1


@dataclasses.dataclass(frozen=True)
class Veto:
    reason: str


@dataclasses.dataclass
class StepInfo:
    """What hooks see after a step: its number, the update and the metrics record (hooks may add keys)."""

    step: int
    update: Update
    record: dict
    learner: Learner
    before: Snapshot | None = None  # the learner before the update (while a hook that may veto is registered)


class Hook:
    """Base class. `after_step` may return a `Veto` only when `may_veto` is True."""

    every: int = 1
    may_veto: bool = False

    def after_step(self, info: StepInfo) -> Veto | None:
        return None

    def undo(self, info: StepInfo) -> None:
        """A hook that may veto, called after it accepted a step that a later one vetoed: undo what its
        `after_step` changed (the learner itself is rolled back by the loop)."""
        return None

    def at_start(self, step: int) -> None:
        """Before the first step (`step`: the one the loop starts after), e.g. to say it is compiling."""
        return None

    def at_end(self, step: int, reason: str) -> None:
        return None


def train_loop(learner: Learner, batches: Iterable[Sequence[Window]], hooks: Sequence[Hook], *, step: int,
               steps: int | None, stop: threading.Event, describe: Callable[[int, Update], dict]) -> tuple[int, str]:
    """Run until `steps` (None: until the source ends or `stop` is set). Returns (last step, why it stopped).

    `batches` yields the live windows of each step; an empty list means "no new text", and the step is
    then made of replay alone, but only with a step budget (a run without one stops when its source ends).
    """
    gates = [h for h in hooks if h.may_veto]
    others = [h for h in hooks if not h.may_veto]
    reason = "error"  # until the loop ends by itself
    in_flight: deque = deque()  # outputs of the dispatched steps not yet waited for
    try:
        note_step(stop, step)
        for h in hooks:
            h.at_start(step)
        it = iter(batches)
        while True:
            if steps is not None and step >= steps:
                reason = "done"
                break
            if stop.is_set():
                reason = "interrupted"
                break
            live = next(it, None)
            if stop.is_set():
                reason = "interrupted"
                break
            replay = getattr(learner, "replay", None)  # only state tuning's learner replays
            if live is None or (not live and (steps is None or replay is None or not len(replay))):
                reason = "source exhausted"
                break
            snap = learner.snapshot() if gates else None
            t0 = time.perf_counter()
            note_step(stop, step + 1)
            upd = learner.update(live)
            in_flight.append(upd)
            if len(in_flight) > DISPATCH_AHEAD:
                jax.block_until_ready(in_flight.popleft())
            step += 1
            info = StepInfo(step, upd, describe(step, upd), learner, snap)
            for i, h in enumerate(gates):
                veto = h.after_step(info)
                if veto is not None:
                    learner.rollback(snap)
                    for done in gates[:i]:
                        done.undo(info)
                    info.record["rolled_back"] = veto.reason
                    break
            info.record["loop_s"] = time.perf_counter() - t0
            for h in others:
                if step % h.every == 0:
                    h.after_step(info)
            note_step(stop, step)
    finally:
        for h in hooks:
            h.at_end(step, reason)
    return step, reason
