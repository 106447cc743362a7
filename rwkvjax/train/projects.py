"""Per-project start states: one S0 per Claude Code project folder, plus a global one.

The learner holds one project's state at a time (its trainables, optimizer moments and replay buffer);
`ProjectStates.switch` parks the current one and loads the next, so each session's windows train its own
project's state and replay only that project's windows. A project seen for the first time starts from the
global state. The global state is not trained by live windows: sleep consolidation (`train.consolidate`) folds
the project states into it, and only when it passes its checks.
"""

from __future__ import annotations

import re
from typing import Callable

import jax
import jax.numpy as jnp

from rwkvjax.train.learner import Learner, Snapshot
from rwkvjax.train.replay import ReplayBuffer
from rwkvjax.train.trainable import Trainable


def store_trainable(store, name: str, trainable: Trainable, *, base_hash: str, tokenizer: str,
                    parent: str | None = None, source: dict | None = None, memory=None):
    """Write a start state into a named-state store (replacing a state of that name; its id stays), with the
    session memory that goes with it (None: the state has none, and a stored one is removed)."""
    from rwkvjax.train.step import to_host
    tr = to_host(trainable)
    return store.put(state_safe_name(name), tr.wkv, base_hash=base_hash, tokenizer=tokenizer, replace=True,
                     parent=parent, source=source, att_shift=tr.att_shift, ffn_shift=tr.ffn_shift, memory=memory)


def state_safe_name(name: str) -> str:
    """A project folder name as a state name (characters a state name cannot hold become '-')."""
    return re.sub(r"[^\w.@+/-]", "-", name)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


class ProjectStates:
    def __init__(self, learner: Learner, fresh_replay: Callable[[], ReplayBuffer], global_state: Trainable):
        self.learner, self.fresh_replay = learner, fresh_replay
        self.global_state = _copy(global_state)
        self.parked: dict[str, Snapshot] = {}
        self.current: str | None = None

    @property
    def names(self) -> list[str]:
        return sorted(set(self.parked) | ({self.current} if self.current is not None else set()))

    def _fresh(self) -> Snapshot:
        tr = _copy(self.global_state)
        return Snapshot(tr, self.learner.tx.init(tr), self.fresh_replay().to_dict(), 0)

    def switch(self, project: str) -> None:
        if project == self.current:
            return
        if self.current is not None:
            self.parked[self.current] = self.learner.snapshot()
        self.learner.rollback(self.parked.pop(project, None) or self._fresh())
        self.current = project

    def snapshot(self, project: str) -> Snapshot:
        """A project's state as it is now (the learner's, when it holds that project)."""
        return self.learner.snapshot() if project == self.current else self.parked[project]

    def project_windows(self) -> dict[str, list]:
        """Every project's replay windows (consolidation trains the global state on them)."""
        out = {}
        for p in self.names:
            snap = self.snapshot(p)
            out[p] = list(ReplayBuffer.from_dict(snap.replay).windows) if snap.replay is not None else []
        return out

    # ----- checkpoint -----
    def trees(self) -> tuple[dict, dict]:
        snaps = {p: self.snapshot(p) for p in self.names}
        return {p: s.trainable for p, s in snaps.items()}, {p: s.opt_state for p, s in snaps.items()}

    def host_state(self) -> dict:
        snaps = {p: self.snapshot(p) for p in self.names}
        return {"current": self.current, "replay": {p: s.replay for p, s in snaps.items()},
                "updates": {p: s.updates for p, s in snaps.items()}}

    def load(self, host: dict, trainables: dict, opt_states: dict, global_state: Trainable) -> None:
        self.global_state = global_state
        self.parked = {p: Snapshot(trainables[p], opt_states[p], host["replay"][p], host["updates"][p])
                       for p in host["replay"]}
        self.current = None
        if host["current"] is not None:
            self.switch(host["current"])

    def like(self, names) -> tuple[dict, dict]:
        """Templates for restoring the checkpoint trees of these projects."""
        tr = self.learner.trainable0
        opt = self.learner.tx.init(tr)
        return {p: tr for p in names}, {p: opt for p in names}
