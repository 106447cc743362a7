"""The trainable pytree of state-tuning: S0 (and optionally the token-shift states and the hypernetwork).

Frozen model weights never enter it, so `jax.grad` and the optimizer only ever see these leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rwkvjax.model.config import Architecture
from rwkvjax.model.state import State, start_state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trainable:
    wkv: jax.Array                    # S0 [L,H,N,N] float32, official orientation (= community `time_state`)
    att_shift: jax.Array | None = None  # [L,C] initial LN1 token shift (optional)
    ffn_shift: jax.Array | None = None  # [L,C] initial LN2 token shift (optional)
    hyper: Any = None                 # hypernetwork params (optional)


def init_trainable(config: Architecture, *, train_shift: bool = False, hyper: Any = None) -> Trainable:
    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    shift = jnp.zeros((L, C), jnp.float32) if train_shift else None
    return Trainable(wkv=jnp.zeros((L, H, N, N), jnp.float32), att_shift=shift,
                     ffn_shift=None if shift is None else jnp.zeros((L, C), jnp.float32), hyper=hyper)


def initial_state(tr: Trainable, batch_size: int) -> State:
    """The trainable start state over a batch (zeros where a part is not trained)."""
    return start_state(tr.wkv, batch_size, att_shift_LC=tr.att_shift, ffn_shift_LC=tr.ffn_shift)


def group_labels(tr: Trainable):
    """'state' for S0 and shift leaves, 'hyper' for hypernetwork leaves (one optimizer each)."""
    def label(path, _):
        return "hyper" if path[0].name == "hyper" else "state"
    return jax.tree_util.tree_map_with_path(label, tr)
