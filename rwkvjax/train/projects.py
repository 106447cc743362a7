"""Per-project start states: one S0 per Claude Code project folder, plus a global one.

The learner holds one project's state at a time (its trainables, optimizer moments and replay buffer);
`ProjectStates.switch` parks the current one and loads the next, so each session's windows train its own
project's state and replay only that project's windows. A project seen for the first time starts from the
global state. The global state is not trained by live windows: sleep consolidation (`train.consolidate`) folds
the project states into it, and only when it passes its checks.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

import jax
import jax.numpy as jnp

from rwkvjax.io.checkpoint import StatePart
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


def publish_tuned(store, name: str, *, base_hash: str, tokenizer: str, source: dict,
                  memory: Callable[[str | None], object] = lambda state: None, state: Trainable | None = None,
                  scope: str | None = None, candidate=None, projects: dict[str, Trainable] | None = None) -> dict:
    """The one way tuned start states reach a named-state store (`train` after each save, `cli.py consolidate`):
    `state` as `name` (with `scope` in its source), then a consolidation `candidate` that was not promoted
    (`train.consolidate.Consolidation`) as `<name>.candidate`, then each of `projects` as the project's name;
    the last two are children of `name`'s record (the one just written, else the stored one). `memory(project)`:
    the session memory stored with a state (project None: the run's). Returns the records written, by name."""
    put = functools.partial(store_trainable, store, base_hash=base_hash, tokenizer=tokenizer)
    out = {}
    if state is not None:
        out[name] = put(name, state, source=source if scope is None else {**source, "scope": scope},
                        memory=memory(None))
    top = out.get(name)
    if top is None and (candidate is not None or projects):
        top = next((r for r in store.records() if r.name == state_safe_name(name)), None)
    parent = None if top is None else top.id
    if candidate is not None:
        out[f"{name}.candidate"] = put(
            f"{name}.candidate", candidate.trainable, parent=parent, memory=memory(None),
            source={**source, "scope": "consolidation candidate", "reason": candidate.reason})
    for p, tr in (projects or {}).items():
        out[p] = put(p, tr, parent=parent, source={**source, "scope": "project", "project": p}, memory=memory(p))
    return out


def state_safe_name(name: str) -> str:
    """A project folder name as a state name (characters a state name cannot hold become '-')."""
    return re.sub(r"[^\w.@+/-]", "-", name)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


class ProjectStates(StatePart):
    """The learner's state per project, and the global state. In a per-project run it is the checkpoint part for
    everything the learner holds: items `trainable` (the global state, where readers of a checkpoint look),
    `opt_state`, `projects` and `project_opt` (each project's trainables and moments), host entries `replay` (the
    learner's buffer) and `projects` (which project is current, each one's buffer and update count)."""

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
        snap = self.parked.pop(project, None) or self._fresh()
        self.learner.load(snap.trainable, snap.opt_state,
                          None if snap.replay is None else ReplayBuffer.from_dict(snap.replay), snap.updates)
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

    # ----- checkpoint part -----
    def checkpoint_host(self) -> dict:
        return {**self.learner.checkpoint_host(), "projects": self.host_state()}

    def checkpoint_arrays(self) -> dict:
        g = self.global_state
        trs, opts = self.trees()
        return {"trainable": g, "opt_state": self.learner.tx.init(g),
                **({"projects": trs, "project_opt": opts} if trs else {})}

    def arrays_like(self, host: dict) -> dict:
        like = self.learner.arrays_like(host)
        names = list((host.get("projects") or {}).get("replay") or ())
        if names:
            like.update(zip(("projects", "project_opt"), self.like(names)))
        return like

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        self.learner.restore_checkpoint(host, arrays)  # the global state and its buffer, until a project is current
        if "projects" in arrays:
            self.load(host["projects"], arrays["projects"], arrays["project_opt"], arrays["trainable"])
