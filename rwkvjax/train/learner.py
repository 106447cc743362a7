"""The one update step of state-tuning: replay sample -> batch -> jitted step -> replay update.

Used by the training run (`train.run`) and by every training arm of the prequential evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rwkvjax.io.checkpoint import StatePart
from rwkvjax.merges.units import PLAIN, UnitFns
from rwkvjax.model.config import Architecture
from rwkvjax.train.data import Window, make_batch
from rwkvjax.train.replay import ReplayBuffer
from rwkvjax.train.step import make_eval_fn, make_train_step, replicate, shard_batch, to_host
from rwkvjax.train.trainable import Trainable


@dataclasses.dataclass
class Update:
    """What one update did. `window_nll` (mean nats per unit, live windows first) and `unit_nll` (nats of every
    position [B,T]) were measured before it."""

    live: list[Window]
    replayed: list[Window]
    metrics: dict            # host scalars: loss, bits, bytes, tokens, grad_norm, nonfinite_total
    window_nll: np.ndarray
    seconds: float
    unit_nll: np.ndarray | None = None
    projected_share: float | None = None  # share of the update the projector removed (None: none applied)

    @property
    def live_bits(self) -> float:
        return float(sum(self.window_nll[j] * len(w.units) for j, w in enumerate(self.live)) / math.log(2))


@dataclasses.dataclass
class Snapshot:
    """Everything an update changes, copied before it (so a hook can roll the update back)."""

    trainable: Trainable
    opt_state: object
    replay: dict | None
    updates: int


def scale_update(before: Trainable, after: Trainable, scale: float) -> Trainable:
    """`before` plus `scale` times the update that took it to `after`."""
    return jax.tree.map(lambda b, a: b + scale * (a - b), before, after)


class Projector(Protocol):
    """What the learner applies to each update of the start state before it keeps it (`train.gate.CanaryProjector`):
    (the state it keeps, the share of the update removed; None when it applied nothing)."""

    def project(self, before: Trainable, after: Trainable) -> tuple[Trainable, float | None]: ...


class Learner(StatePart):
    """Trainable start state + optimizer + replay buffer, updated one batch of windows at a time.

    `mesh`: shard the window axis over its devices (the batch is padded to a multiple of them).
    `window_text`: the (redacted) text stored with a live window in the replay buffer, for `inspect`.
    `remat`: the train step's rematerialisation policy ('none', 'dots' or 'full'; `rwkvjax.train.remat`).
    `projector`: applied to every update of the start state (None: the optimizer's update is kept as it is).

    A checkpoint part (`io.checkpoint.StatePart`): items `trainable`, `opt_state`, host entry `replay`.
    """

    def __init__(self, config: Architecture, params, trainable0: Trainable, tx: optax.GradientTransformation, *,
                 ctx_len: int, live_per_step: int, replay_per_step: int = 0, replay: ReplayBuffer | None = None,
                 units: UnitFns = PLAIN, n_slots: int | None = None, mesh=None, wkv_impl="auto",
                 max_traces: int | None = 1, window_text: Callable[[Window], str] | None = None,
                 remat: str = "full", projector: Projector | None = None):
        self.config, self.tx, self.units, self.mesh = config, tx, units, mesh
        self.projector = projector
        # the share of the optimizer's update kept (the run's learning-rate backoff, `train.run_state.LrBackoff`):
        # with AdamW that is the learning rate times it, without rebuilding the optimizer or its state
        self.lr_scale = 1.0
        self.ctx_len, self.live_per_step, self.n_slots = ctx_len, live_per_step, n_slots
        self.replay = replay
        self.replay_per_step = replay_per_step if replay is not None else 0
        self.window_text = window_text
        n_dev = 1 if mesh is None else len(mesh.local_devices)
        self.batch_size = math.ceil((live_per_step + self.replay_per_step) / n_dev) * n_dev
        self.params = params if mesh is None else replicate(params, mesh)
        self.trainable0 = trainable0  # kept: the reducible-surprise baseline (the step donates its inputs)
        self.trainable = jax.tree.map(jnp.copy, trainable0)
        self.opt_state = tx.init(self.trainable)
        self.step_fn = make_train_step(config, tx, units=units, wkv_impl=wkv_impl, max_traces=max_traces,
                                       remat=remat)
        self.reducible = replay is not None and replay.settings.priority == "reducible"
        self.eval_fn = make_eval_fn(config, units=units, wkv_impl=wkv_impl) if self.reducible else None
        self.updates = 0
        self.place()

    def place(self) -> None:
        """One placement (replicated over the mesh) for every step's inputs, so the step never retraces."""
        if self.mesh is not None:
            self.trainable = replicate(self.trainable, self.mesh)
            self.opt_state = replicate(self.opt_state, self.mesh)

    def load(self, trainable: Trainable, opt_state, replay: ReplayBuffer | None, updates: int) -> None:
        """Take a state from elsewhere: a checkpoint, another project's or conversation's state."""
        self.trainable, self.opt_state, self.replay, self.updates = trainable, opt_state, replay, updates
        self.place()

    # ----- checkpoint part -----
    def checkpoint_host(self) -> dict:
        return {"replay": None if self.replay is None else self.replay.to_dict()}

    def checkpoint_arrays(self) -> dict:
        return {"trainable": self.trainable, "opt_state": self.opt_state}

    def arrays_like(self, host: dict) -> dict:
        return {"trainable": self.trainable0, "opt_state": self.opt_state}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        replay = ReplayBuffer.from_host(host, source=f"checkpoint step {host['step']} replay")
        self.load(arrays["trainable"], arrays["opt_state"], replay, updates=host["step"])

    # ----- one update -----
    def update(self, live: Sequence[Window]) -> Update:
        live = list(live)
        n_replay = min(self.replay_per_step, len(self.replay)) if self.replay_per_step else 0
        idx, isw = self.replay.sample(n_replay) if n_replay else (np.zeros(0, int), np.zeros(0))
        replayed = [self.replay.windows[i] for i in idx]
        batch = make_batch(live + replayed, [1.0] * len(live) + [float(x) for x in isw],
                           batch_size=self.batch_size, ctx_len=self.ctx_len, n_slots=self.n_slots)
        if self.mesh is not None:
            batch = shard_batch(batch, self.mesh)
        nll_frozen = None
        if self.reducible and live:
            _, mf = self.eval_fn(self.trainable0, self.params, batch)
            nll_frozen = to_host(mf["window_nll"])
        # the step donates its inputs: the projector and the backoff need the state the update started from
        scaled = self.lr_scale != 1.0
        before = jax.tree.map(jnp.copy, self.trainable) if self.projector is not None or scaled else None
        t0 = time.perf_counter()
        self.trainable, self.opt_state, m = self.step_fn(self.trainable, self.opt_state, self.params, batch)
        m = to_host(m)
        seconds = time.perf_counter() - t0
        share = None
        if scaled:
            self.trainable = scale_update(before, self.trainable, self.lr_scale)
            self.place()
        if self.projector is not None:
            self.trainable, share = self.projector.project(before, self.trainable)
            self.place()
        wnll = np.asarray(m.pop("window_nll"))
        unit_nll = np.asarray(m.pop("unit_nll"))
        if self.replay is not None:
            # refresh the replayed entries first: admitting a live window may evict one of them
            if n_replay:
                self.replay.update(idx, wnll[len(live):len(live) + n_replay])
            for j, w in enumerate(live):
                text = None if self.window_text is None else self.window_text(w)
                self.replay.add(w, float(wnll[j]), None if nll_frozen is None else float(nll_frozen[j]), text=text)
        self.updates += 1
        return Update(live, replayed, {k: float(v) for k, v in m.items()}, wnll, seconds, unit_nll, share)

    # ----- undo -----
    def snapshot(self) -> Snapshot:
        copy = lambda t: jax.tree.map(jnp.copy, t)
        return Snapshot(copy(self.trainable), copy(self.opt_state),
                        None if self.replay is None else self.replay.to_dict(), self.updates)

    def rollback(self, snap: Snapshot) -> None:
        """Undo the updates made since `snap` (a snapshot of this learner)."""
        replay = self.replay if snap.replay is None else ReplayBuffer.from_dict(snap.replay)
        self.load(snap.trainable, snap.opt_state, replay, snap.updates)
