"""Training checkpoints through orbax: trainables, optimizer state and all host-side state, per step.

Step directories are written atomically (orbax commits a step only when complete), the last N kept,
saves run asynchronously. Host state (tokenizer, replay buffer, ingestion cursor, RNG, counters,
metrics history, base-model hash) travels as JSON in the same step so it always matches the arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from rwkvjax.errors import MissingFile


def checkpoint_manager(directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
                       create: bool = True) -> ocp.CheckpointManager:
    """The one orbax manager: the newest `keep` steps preserved, async saves, atomic step folders.

    `create=False` is for readers: a missing folder is an error instead of a new empty one.
    """
    directory = Path(directory).absolute()
    if not create and not directory.is_dir():
        raise MissingFile(f"{directory}: no such checkpoint folder")
    opts = ocp.CheckpointManagerOptions(preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                                        enable_async_checkpointing=async_save, create=create)
    return ocp.CheckpointManager(directory, options=opts)


def abstract(tree):
    """Shapes and dtypes of `tree`, the template orbax restores into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class TrainCheckpointer:
    """Steps of a training run: items `trainable`, `opt_state` (arrays) and `host` (JSON)."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        self._mngr = checkpoint_manager(self.directory, keep=keep, async_save=async_save and not read_only,
                                        create=not read_only)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, trainable, opt_state, host: dict, extra: dict | None = None) -> None:
        """`extra`: more array trees saved in the same step (per-project states), read back by `restore_extra`."""
        more = {k: ocp.args.StandardSave(v) for k, v in (extra or {}).items()}
        self._mngr.save(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardSave(trainable), opt_state=ocp.args.StandardSave(opt_state),
            host=ocp.args.JsonSave(host), **more))

    def restore_extra(self, step: int, likes: dict) -> dict:
        out = self._mngr.restore(step, args=ocp.args.Composite(
            **{k: ocp.args.StandardRestore(abstract(v)) for k, v in likes.items()}))
        return {k: out[k] for k in likes}

    def restore(self, step: int, trainable_like, opt_like):
        out = self._mngr.restore(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardRestore(abstract(trainable_like)),
            opt_state=ocp.args.StandardRestore(abstract(opt_like)), host=ocp.args.JsonRestore()))
        return out.trainable, out.opt_state, out.host

    def _step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise MissingFile(f"{self.directory}: no checkpoint found (is this a --ckpt-dir of `train`?)")
        return step

    def restore_host(self, step: int | None = None) -> dict:
        """Only the JSON part (for `inspect` and `merge-stats`, no model needed)."""
        return self._mngr.restore(self._step(step), args=ocp.args.Composite(host=ocp.args.JsonRestore())).host

    def restore_trainable_arrays(self, step: int | None = None):
        """The trainable arrays as saved (a nested dict), without knowing their structure in advance."""
        return self._mngr.restore(self._step(step),
                                  args=ocp.args.Composite(trainable=ocp.args.StandardRestore())).trainable

    def wait(self) -> None:
        self._mngr.wait_until_finished()
        for f in self.directory.glob("*/host/*"):
            f.chmod(0o600)  # host state holds trace text (already redacted): owner-only

    def close(self) -> None:
        self.wait()
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
