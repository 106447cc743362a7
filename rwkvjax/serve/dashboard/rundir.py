"""The slower-changing parts of a run folder: its newest checkpoint's summary and the named-state tree.

The checkpoint summary is `eval.inspect.inspect` (gate counts and last reasons, projects, replay buffer,
state norms, the run's settings), read again only when a new step folder appears. The state tree is read
from the store on every call (one small JSON file per state).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from rwkvjax.errors import UserError
from rwkvjax.io.states import StateRecord, StateStore
from rwkvjax.serve.dashboard.tail import finite

log = logging.getLogger(__name__)

RETRY_S = 10.0  # a checkpoint that failed to read (e.g. pruned while read) is tried again after this long


def newest_step_folder(ckpt_dir: Path) -> int | None:
    """The newest committed step (orbax renames a step folder to its number only once it is complete)."""
    steps = [int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and p.is_dir()] if ckpt_dir.is_dir() else []
    return max(steps, default=None)


def kind_of(rec: StateRecord) -> str:
    """How a state came to be, from its record: trained, project, candidate, fork, imported or conversation."""
    src = rec.source or {}
    if "fork" in src:
        return "fork"
    if "file" in src:
        return "imported"
    scope = src.get("scope", "")
    if scope == "project":
        return "project"
    if scope.startswith("consolidation"):
        return "candidate"
    if "checkpoint" in src:
        return "trained"
    return "conversation" if "/" in rec.name else "state"


def state_tree(folder: str | Path, ckpt_dir: Path) -> list[dict]:
    """The store's states nested under their parents (a state whose parent was removed is a root)."""
    recs = StateStore(folder, create=False).records()
    nodes = {r.id: {"id": r.id, "name": r.name, "parent": r.parent, "created": r.created, "kind": kind_of(r),
                    "step": (r.source or {}).get("step"), "reason": (r.source or {}).get("reason"),
                    "this_run": (r.source or {}).get("checkpoint") == str(ckpt_dir), "children": []}
             for r in recs}
    roots = []
    for r in recs:
        parent = nodes.get(r.parent) if r.parent else None
        if parent is None:
            nodes[r.id]["orphan"] = r.parent is not None
            roots.append(nodes[r.id])
        else:
            parent["children"].append(nodes[r.id])
    return roots


class RunFolder:
    """A `train --ckpt-dir` folder; `states`: the named-state store to show (default: the run's own)."""

    def __init__(self, ckpt_dir: str | Path, states: str | None = None):
        self.ckpt_dir = Path(ckpt_dir).absolute()
        self.states = states
        self._lock = threading.Lock()
        self._summary: tuple[int | None, float, dict] | None = None  # (step, when read, result)

    def checkpoint(self) -> dict:
        """{"step": n, "summary": inspect's report} or {"error": why}; cached per newest step."""
        step = newest_step_folder(self.ckpt_dir)
        if step is None:
            return {"step": None, "error": "no checkpoint yet (train saves one every --save-every steps)"}
        with self._lock:
            hit = self._summary
            if hit is not None and hit[0] == step and ("error" not in hit[2] or time.time() - hit[1] < RETRY_S):
                return hit[2]
            self._summary = (step, time.time(), self._read())
            return self._summary[2]

    def _read(self) -> dict:
        from rwkvjax.eval.inspect import inspect  # loads orbax and jax: only once a checkpoint exists
        try:
            rep = inspect(self.ckpt_dir)
        except UserError as e:
            return {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - the trainer may prune a step while it is read; shown, retried
            log.warning("reading the checkpoint of %s failed: %s", self.ckpt_dir, e)
            return {"error": f"checkpoint not readable yet ({type(e).__name__}: {e})"}
        rep.pop("curve", None)  # the page has every record
        rep["replay"].pop("top", None)  # window texts the page does not show
        return finite({"step": rep["step"], "summary": rep})

    def states_folder(self, summary: dict) -> tuple[str | None, str]:
        """(folder, where the choice came from)."""
        if self.states:
            return self.states, "--states"
        folder = ((summary.get("summary") or {}).get("train_config") or {}).get("states")
        return folder, "the run's --states"

    def state_tree(self, summary: dict) -> dict:
        folder, origin = self.states_folder(summary)
        if folder is None:
            why = "this run writes no named states (train --states DIR); pass --states to show a store" \
                if "summary" in summary else "no checkpoint yet to tell where the run stores its states"
            return {"folder": None, "note": why, "tree": []}
        try:
            return {"folder": str(folder), "origin": origin, "tree": state_tree(folder, self.ckpt_dir)}
        except UserError as e:
            return {"folder": str(folder), "origin": origin, "note": str(e), "tree": []}
