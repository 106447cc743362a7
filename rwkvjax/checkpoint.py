"""Training checkpoints through orbax: trainables, optimizer state and all host-side state, per step.

Step directories are written atomically (orbax commits a step only when complete), the last N kept,
saves run asynchronously. Host state (tokenizer, replay buffer, ingestion cursor, RNG, counters,
metrics history, base-model hash) travels as JSON in the same step so it always matches the arrays.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatch(ValueError):
    """A checkpoint cannot be resumed with the given model or settings."""


def params_hash(params) -> str:
    """Content hash of the frozen base model (shapes, dtypes and values of every leaf)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{a.shape}:{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()[:32]


class TrainCheckpointer:
    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        opts = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=opts)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, trainable, opt_state, host: dict) -> None:
        self._mngr.save(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardSave(trainable), opt_state=ocp.args.StandardSave(opt_state),
            host=ocp.args.JsonSave(host)))

    def restore(self, step: int, trainable_like, opt_like):
        abstract = lambda t: jax.tree.map(ocp.utils.to_shape_dtype_struct, t)
        out = self._mngr.restore(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardRestore(abstract(trainable_like)),
            opt_state=ocp.args.StandardRestore(abstract(opt_like)), host=ocp.args.JsonRestore()))
        return out.trainable, out.opt_state, out.host

    def restore_host(self, step: int | None = None) -> dict:
        """Only the JSON part (for `inspect` and `merge-stats`, no model needed)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint found (is this a --ckpt-dir of `train`?)")
        return self._mngr.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host

    def restore_trainable_arrays(self, step: int | None = None):
        """The trainable arrays as saved (a nested dict), without knowing their structure in advance."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint found")
        return self._mngr.restore(step, args=ocp.args.Composite(trainable=ocp.args.StandardRestore())).trainable

    def wait(self) -> None:
        self._mngr.wait_until_finished()
        for f in self.directory.glob("*/host/*"):
            f.chmod(0o600)  # host state holds trace text (already redacted): owner-only

    def close(self) -> None:
        self.wait()
        self._mngr.close()


def load_tuned_state(ckpt_dir: str | os.PathLike, config, batch_size: int = 1):
    """The start state a training run learned (S0 and, if trained, the shift states), ready for forward."""
    import jax.numpy as jnp

    from rwkvjax.state import zero_state
    ck = TrainCheckpointer(ckpt_dir, async_save=False)
    try:
        tr = ck.restore_trainable_arrays()
    finally:
        ck.close()
    state = zero_state(config, batch_size)
    want = state.wkv.shape[:1] + state.wkv.shape[2:]
    wkv = np.asarray(tr["wkv"])
    if wkv.shape != want:
        raise CheckpointMismatch(f"{ckpt_dir}: tuned state has shape {wkv.shape}, this model needs {want}; "
                                 "use the --model the checkpoint was trained on")
    bcast = lambda a, like: jnp.broadcast_to(jnp.asarray(a, jnp.float32)[:, None], like.shape)
    state = state._replace(wkv=bcast(wkv, state.wkv))
    for k in ("att_shift", "ffn_shift"):
        if tr.get(k) is not None:
            state = state._replace(**{k: bcast(tr[k], getattr(state, k))})
    return state
