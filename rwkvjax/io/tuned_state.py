"""The start state a training run learned, read from its checkpoint folder, ready for `forward`."""

from __future__ import annotations

import os

import numpy as np

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Params, params_hash
from rwkvjax.model.state import State, start_state


def load_tuned_state(ckpt_dir: str | os.PathLike, config: Architecture, params: Params, *, dtype: str = "fp32",
                     batch_size: int = 1) -> State:
    """S0 (and, if they were trained, the shift states) of the newest intact step of `ckpt_dir`, checked
    against the model it is for: the same base model (hash) loaded with the same weight dtype (`dtype`)."""
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        _, host, tr = ck.restore_newest_host_and_arrays()
    if params_hash(params) != host["base_hash"]:
        trained = host.get("train_config", {}).get("dtype", "fp32")
        if trained != dtype:
            raise CheckpointMismatch(f"{ckpt_dir}: the state was trained on {trained} weights and this command "
                                     f"loaded {dtype} (dtype differs); pass --dtype {trained}")
        raise CheckpointMismatch(f"{ckpt_dir}: the state was trained on a different base model ({host['base_model']}, "
                                 f"hash {host['base_hash']}); pass that --model")
    L, H, N = config.n_layer, config.n_head, config.head_size
    wkv = np.asarray(tr["wkv"])
    if wkv.shape != (L, H, N, N):
        raise CheckpointMismatch(f"{ckpt_dir}: tuned state has shape {wkv.shape}, this model needs {(L, H, N, N)}; "
                                 "use the --model the checkpoint was trained on")
    return start_state(wkv, batch_size, att_shift_LC=tr.get("att_shift"), ffn_shift_LC=tr.get("ffn_shift"))
