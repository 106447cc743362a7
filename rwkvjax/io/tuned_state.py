"""The start state a training run learned, read from its checkpoint folder, ready for `forward`."""

from __future__ import annotations

import os

import numpy as np

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.model.state import State, start_state
from rwkvjax.model.value import Model


def load_tuned_state(ckpt_dir: str | os.PathLike, model: Model, *, batch_size: int = 1) -> State:
    """S0 (and, if they were trained, the shift states) of the newest intact step of `ckpt_dir`, checked
    against the model it is for: the same base model (hash) loaded with the same weight dtype."""
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        _, host, tr = ck.restore_newest_host_and_arrays()
    if model.hash != host["base_hash"]:
        trained = host.get("train_config", {}).get("dtype", "fp32")
        if trained != model.dtype:
            raise CheckpointMismatch(f"{ckpt_dir}: the state was trained on {trained} weights and this command "
                                     f"loaded {model.dtype} (dtype differs); pass --dtype {trained}")
        raise CheckpointMismatch(f"{ckpt_dir}: the state was trained on a different base model ({host['base_model']}, "
                                 f"hash {host['base_hash']}); pass that --model")
    L, H, N = model.arch.n_layer, model.arch.n_head, model.arch.head_size
    wkv = np.asarray(tr["wkv"])
    if wkv.shape != (L, H, N, N):
        raise CheckpointMismatch(f"{ckpt_dir}: tuned state has shape {wkv.shape}, this model needs {(L, H, N, N)}; "
                                 "use the --model the checkpoint was trained on")
    return start_state(wkv, batch_size, att_shift_LC=tr.get("att_shift"), ffn_shift_LC=tr.get("ffn_shift"))
