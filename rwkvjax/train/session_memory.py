"""Session memories in a training checkpoint: how they are stored in a step, and read back by every command.

A step of `train` holds its memories as the orbax item `memory` ({name: arrays}, saved and committed with the
step's other items) and their descriptions in the host JSON under `"memory"` ({name: meta}). The run's memory
is named `GLOBAL`; with `--state-scope per-project` each project's memory is stored under the project's name.
"""

from __future__ import annotations

import os

from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.memory.memory import SessionMemory

ITEM = "memory"
GLOBAL = "_run"


def memory_tree(memories: dict[str, SessionMemory]) -> tuple[dict, dict]:
    """(host JSON entry, orbax array tree) of the named memories."""
    metas, trees = {}, {}
    for name, mem in memories.items():
        metas[name], trees[name] = mem.state_dict()
    return metas, trees


def memory_like(metas: dict) -> dict:
    """The array tree a step's memories restore into (shapes and dtypes from their descriptions)."""
    return {name: SessionMemory.empty_like(meta, source="checkpoint").state_dict()[1] for name, meta in metas.items()}


def restore_memories(ckpt: TrainCheckpointer, step: int, host: dict) -> dict[str, SessionMemory]:
    """The memories saved in `step` (empty when the step has none: a run without a memory, or an older one)."""
    metas = host.get(ITEM) or {}
    if not metas:
        return {}
    trees = ckpt.restore_extra(step, {ITEM: memory_like(metas)})[ITEM]
    return {name: SessionMemory.from_state_dict(metas[name], trees[name], source=f"{ckpt.directory} step {step}")
            for name in metas}


def checkpoint_memory(ckpt_dir: str | os.PathLike, name: str = GLOBAL) -> SessionMemory | None:
    """The memory `name` of the newest intact step of a `train` folder, or None when the run kept none."""
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        found = ck.newest_intact(lambda s: restore_memories(ck, s, ck.restore_host(s)))
    if found is None:
        return None
    return found[1].get(name)
