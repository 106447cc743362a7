"""The start state a training run learned, read from its checkpoint folder, ready for `forward`."""

from __future__ import annotations

import os

import numpy as np

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.model.config import Config
from rwkvjax.model.state import State, start_state


def load_tuned_state(ckpt_dir: str | os.PathLike, config: Config, batch_size: int = 1) -> State:
    """S0 (and, if they were trained, the shift states) of the newest step of `ckpt_dir`."""
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        tr = ck.restore_trainable_arrays()
    L, H, N = config.n_layer, config.n_head, config.head_size
    wkv = np.asarray(tr["wkv"])
    if wkv.shape != (L, H, N, N):
        raise CheckpointMismatch(f"{ckpt_dir}: tuned state has shape {wkv.shape}, this model needs {(L, H, N, N)}; "
                                 "use the --model the checkpoint was trained on")
    return start_state(wkv, batch_size, att_shift_LC=tr.get("att_shift"), ffn_shift_LC=tr.get("ffn_shift"))
