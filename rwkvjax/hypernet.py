"""Hypernetwork embeddings for virtual tokens (dynamic-tokenizer slots), as pure functions.

A unit id u < V is a base token; u = V + s is slot s of the tokenizer's table, whose two base
constituents are slots_S2[s]. The model consumes a merged pair as ONE recurrent step:

    input side   e(s) = emb[b] + MLP_in([emb[a]; emb[b]])           (2C -> C -> C, GELU)
    output side  h(s) = head[:, a] + MLP_out([head[:, a]; head[:, b]])
    logits       [hidden @ head | hidden @ h(S)^T, inactive slots = -inf]

Initialisation (why): both MLPs have a zero output layer, so an untrained hypernetwork is exact and
sensible. Input side residual on the *second* constituent: RWKV predicts the unit after the merged
pair from the state after it, and the token immediately before that target is b; reading the pair
as b only loses a's (decayed) contribution to the state, while reading it as a would make the
model predict the token after a, i.e. b again. Output side residual on the *first* constituent:
the unit (a,b) starts with a, so before training it is scored like a. Untied encoders because one
vector cannot serve both geometries (zip2zip v0.5). With exact zeros the first layers get no
gradient on the very first update; from the second update on every leaf learns.

Strict code length: the training target is the next unit of the canonical merged stream and the
softmax runs over base ids plus the slots the decoder already has, so sum(-log2 P) over units
divided by the text's UTF-8 bytes is a valid (strict) bits-per-byte figure.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from rwkvjax.config import Config
from rwkvjax.model import embed, forward_hidden, head_logits
from rwkvjax.params import Params
from rwkvjax.state import State
from rwkvjax.wkv import WkvImpl

_HI = jax.lax.Precision.HIGHEST


def _pytree(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


@_pytree
class PairMLP:
    """[x_a; x_b] (2C) -> C -> C with GELU; output added to a residual constituent."""

    w1: jax.Array  # [2C, C]
    b1: jax.Array  # [C]
    w2: jax.Array  # [C, C], zero at init
    b2: jax.Array  # [C], zero at init


@_pytree
class HyperParams:
    inp: PairMLP  # over frozen embedding rows
    out: PairMLP  # over frozen head rows


def _init_mlp(C: int, key) -> PairMLP:
    w1 = jax.random.normal(key, (2 * C, C), jnp.float32) / math.sqrt(2 * C)
    return PairMLP(w1=w1, b1=jnp.zeros((C,), jnp.float32),
                   w2=jnp.zeros((C, C), jnp.float32), b2=jnp.zeros((C,), jnp.float32))


def init_hypernet(config: Config, key) -> HyperParams:
    k_in, k_out = jax.random.split(key)
    return HyperParams(inp=_init_mlp(config.n_embd, k_in), out=_init_mlp(config.n_embd, k_out))


def _mlp(p: PairMLP, xa, xb):
    h = jax.nn.gelu(jnp.matmul(jnp.concatenate([xa, xb], -1), p.w1, precision=_HI) + p.b1)
    return jnp.matmul(h, p.w2, precision=_HI) + p.b2


def _batched_slots(slots_S2, B):
    """[S,2] or [B,S,2] int -> [B,S,2] with empty (-1) entries clipped to a valid row (they are masked)."""
    s = jnp.asarray(slots_S2, jnp.int32)
    if s.ndim == 2:
        s = s[None]
    return jnp.broadcast_to(jnp.maximum(s, 0), (B,) + s.shape[1:])


def slot_embeddings(params: Params, hyper: HyperParams, slots_BS2) -> jax.Array:
    """Input-side embeddings of every slot, float32 [B,S,C]."""
    ea, eb = embed(params, slots_BS2[..., 0]), embed(params, slots_BS2[..., 1])
    return eb + _mlp(hyper.inp, ea, eb)


def slot_head_rows(params: Params, hyper: HyperParams, slots_BS2) -> jax.Array:
    """Output-side unembedding rows of every slot, float32 [B,S,C]."""
    head_VC = params.head.T.astype(jnp.float32)
    ha, hb = head_VC[slots_BS2[..., 0]], head_VC[slots_BS2[..., 1]]
    return ha + _mlp(hyper.out, ha, hb)


def unit_embeddings(params: Params, hyper: HyperParams, units_BT, slots_S2) -> jax.Array:
    """Units [B,T] -> raw embeddings [B,T,C]: base ids read params.emb, ids >= V the slot's hypernet output."""
    V = params.emb.shape[0]
    units_BT = jnp.asarray(units_BT, jnp.int32)
    B = units_BT.shape[0]
    virt_BSC = slot_embeddings(params, hyper, _batched_slots(slots_S2, B))
    is_virt = units_BT >= V
    base = embed(params, jnp.where(is_virt, 0, units_BT))
    slot_BT = jnp.clip(units_BT - V, 0, virt_BSC.shape[1] - 1)
    virt = jnp.take_along_axis(virt_BSC, slot_BT[..., None], axis=1)
    return jnp.where(is_virt[..., None], virt, base)


def unit_logits(params: Params, hyper: HyperParams, hidden_BTC, slots_S2, active) -> jax.Array:
    """Hidden [B,T,C] -> logits [B,T,V+S] over base ids then slots.

    `active` (bool) broadcasts to [B,T,S]: [S] for a fixed table, [T,S] or [B,T,S] for the per-position
    availability the decoder has (dyntok `Encoded.target_mask`). Masked slots get -inf.
    """
    B = hidden_BTC.shape[0]
    base = head_logits(params, hidden_BTC)
    rows_BSC = slot_head_rows(params, hyper, _batched_slots(slots_S2, B))
    virt = jnp.einsum("btc,bsc->bts", hidden_BTC.astype(jnp.float32), rows_BSC, precision=_HI)
    virt = jnp.where(jnp.asarray(active, bool), virt, -jnp.inf)
    return jnp.concatenate([base, virt], axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "wkv_impl", "remat"))
def forward_units(params: Params, hyper: HyperParams, units_BT, state: State, slots_S2, active, *,
                  config: Config, wkv_impl: WkvImpl | str = WkvImpl.AUTO, remat: bool = False):
    """Units [B,T] -> (logits [B,T,V+S], new State); one recurrent step per unit."""
    x = unit_embeddings(params, hyper, units_BT, slots_S2)
    hidden, new_state = forward_hidden(params, x, state, config=config, wkv_impl=wkv_impl, remat=remat)
    return unit_logits(params, hyper, hidden, slots_S2, active), new_state


def unit_loss(params: Params, hyper: HyperParams, inputs_BT, targets_BT, state: State, slots_S2, active,
              mask_BT=None, *, config: Config, wkv_impl: WkvImpl | str = WkvImpl.AUTO, remat: bool = False):
    """Teacher-forced CE on the canonical unit stream.

    Returns (mean nats per scored unit, (bits summed over scored units, units scored, new State)).
    Divide the bits by the text's UTF-8 bytes for strict bits per byte. `mask_BT` marks real targets
    (False on padding); every position counts when it is None.
    """
    logits, new_state = forward_units(params, hyper, inputs_BT, state, slots_S2, active,
                                      config=config, wkv_impl=wkv_impl, remat=remat)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll_BT = -jnp.take_along_axis(logp, jnp.asarray(targets_BT, jnp.int32)[..., None], axis=-1)[..., 0]
    m = jnp.ones(nll_BT.shape, jnp.float32) if mask_BT is None else jnp.asarray(mask_BT, jnp.float32)
    # where(): a masked-out -inf target must not turn the sum into nan
    total = jnp.sum(jnp.where(m > 0, nll_BT, 0.0))
    n = jnp.sum(m)
    return total / jnp.maximum(n, 1.0), (total / math.log(2.0), n, new_state)
