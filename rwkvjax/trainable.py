"""The trainable pytree of state-tuning: S0 (and optionally the token-shift states and the hypernetwork).

Frozen model weights never enter it, so `jax.grad` and the optimizer only ever see these leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rwkvjax.config import Config
from rwkvjax.state import State


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trainable:
    wkv: jax.Array                    # S0 [L,H,N,N] float32, official orientation (= community `time_state`)
    att_shift: jax.Array | None = None  # [L,C] initial LN1 token shift (optional)
    ffn_shift: jax.Array | None = None  # [L,C] initial LN2 token shift (optional)
    hyper: Any = None                 # hypernetwork params (optional)


def init_trainable(config: Config, *, train_shift: bool = False, hyper: Any = None) -> Trainable:
    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    shift = jnp.zeros((L, C), jnp.float32) if train_shift else None
    return Trainable(wkv=jnp.zeros((L, H, N, N), jnp.float32), att_shift=shift,
                     ffn_shift=None if shift is None else jnp.zeros((L, C), jnp.float32), hyper=hyper)


def initial_state(tr: Trainable, batch_size: int) -> State:
    """Broadcast the trainable start state over a batch (zeros where a part is not trained)."""
    L, H, N, _ = tr.wkv.shape
    bcast = lambda a, shape: jnp.broadcast_to(a[:, None], shape)
    C = H * N if tr.att_shift is None else tr.att_shift.shape[-1]
    zeros = jnp.zeros((L, batch_size, C), jnp.float32)
    return State(
        att_shift=zeros if tr.att_shift is None else bcast(tr.att_shift, zeros.shape),
        ffn_shift=zeros if tr.ffn_shift is None else bcast(tr.ffn_shift, zeros.shape),
        wkv=bcast(tr.wkv, (L, batch_size, H, N, N)),
    )


def group_labels(tr: Trainable):
    """'state' for S0 and shift leaves, 'hyper' for hypernetwork leaves (one optimizer each)."""
    def label(path, _):
        return "hyper" if path[0].name == "hyper" else "state"
    return jax.tree_util.tree_map_with_path(label, tr)
