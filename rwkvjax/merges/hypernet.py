"""Hypernetwork embeddings for virtual tokens (dynamic-tokenizer slots), as pure functions.

A unit id u < V is a base token; u = V + s is slot s of the tokenizer's table. The model consumes a
merged pair as ONE recurrent step.

Input side: e(s) = emb[b] + MLP_in([emb[a]; emb[b]])  (2C -> C -> C, GELU). Residual on the *second*
constituent: the unit after the pair is predicted from the state after it, and the token right before
that target is b; reading the pair as b only loses a's (decayed) contribution, while reading it as a
would make the model predict b again. Zero output layer, so the untrained hypernetwork is this residual.

Output side, factorised so no probability is counted twice. The frozen head gives P(a) for every base
token a. A slot s = (a, b) gets a score z_s = hidden . r_s + c_s, with [r_s; c_s] = MLP_out([head_a;
head_b]) (2C -> C -> C+1), and the mass P(a) is split between "a alone" and the slots starting with a:

    P(unit a) = P(a) / (1 + sum_{s in G_a} e^z_s)      P(unit s) = P(a) e^z_s / (1 + sum_{s' in G_a} e^z_s')

so z_s models the odds of b following a. The untrained hypernet (z = 0) splits P(a) evenly. A joint
softmax over [base; slots] instead gives "a" its full P(a) although the pair (a, b) would have been
merged, and puts the same mass on (a, b) again: every merge then costs bits it cannot win back.

Canonical-stream exclusion. Encoding is greedy with the causal table, so when unit t-1 is base a and the
table then held (a, b), the next base token is not b: no unit starting with b can be unit t (inside a
segment). Those units get zero probability and the rest is renormalised; the decoder knows the table and
the previous unit, so the code stays decodable.

Strict code length: targets are the units of the canonical merged stream and every distribution above
uses only the table in force when the unit was decided (dyntok `Encoded.pairs_at`: a slot holds its
`prior` pair until `avail_from`, then its end-of-segment pair), so sum(-log2 P) over units divided by the
text's UTF-8 bytes is a valid (strict) bits-per-byte figure, comparable with the plain model's.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Params
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits, head_rows, vocab_rows
from rwkvjax.model.state import State
from rwkvjax.model.wkv import WkvImpl

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


def _init_mlp(C: int, out_dim: int, key) -> PairMLP:
    w1 = jax.random.normal(key, (2 * C, C), jnp.float32) / math.sqrt(2 * C)
    return PairMLP(w1=w1, b1=jnp.zeros((C,), jnp.float32),
                   w2=jnp.zeros((C, out_dim), jnp.float32), b2=jnp.zeros((out_dim,), jnp.float32))


def init_hypernet(config: Architecture, key) -> HyperParams:
    k_in, k_out = jax.random.split(key)
    C = config.n_embd
    return HyperParams(inp=_init_mlp(C, C, k_in), out=_init_mlp(C, C + 1, k_out))


def _mlp(p: PairMLP, xa, xb):
    h = jax.nn.gelu(jnp.matmul(jnp.concatenate([xa, xb], -1), p.w1, precision=_HI) + p.b1)
    return jnp.matmul(h, p.w2, precision=_HI) + p.b2


@_pytree
class SlotTables:
    """Per-window slot tables (dyntok `Encoded`): -1 marks an empty slot."""

    slots_BS2: jax.Array   # int32, table at the end of the segment (reads every input unit)
    prior_BS2: jax.Array   # int32, table when the segment began
    avail_BS: jax.Array    # int32, unit index from which slot s holds slots_BS2[s] (prior_BS2[s] before)

    @staticmethod
    def of(slots, prior=None, avail_from=None) -> "SlotTables":
        """[S,2]/[B,S,2] tables; a fixed table (prior = slots, available from 0) when prior is None."""
        slots = jnp.asarray(slots, jnp.int32)
        if slots.ndim == 2:
            slots = slots[None]
        prior = slots if prior is None else jnp.asarray(prior, jnp.int32).reshape(slots.shape)
        avail = (jnp.zeros(slots.shape[:2], jnp.int32) if avail_from is None
                 else jnp.asarray(avail_from, jnp.int32).reshape(slots.shape[:2]))
        return SlotTables(slots, prior, avail)

    def pairs_at(self, t_BT) -> jax.Array:
        """[B,T,S,2]: the pairs in force when unit index t was decided."""
        before = t_BT[..., None] < self.avail_BS[:, None, :]
        return jnp.where(before[..., None], self.prior_BS2[:, None], self.slots_BS2[:, None])


@_pytree
class UnitPositions:
    """Per-position context of the output side."""

    t_BT: jax.Array     # int32 index of the target unit inside its segment
    prev_BT: jax.Array  # int32 unit before it inside the segment, -1 at the segment's start

    @staticmethod
    def of(inputs_BT, first_in_segment=True, start: int = 0) -> "UnitPositions":
        """Teacher forcing: input t is the unit before target t; a window starting its segment has no prev."""
        inputs_BT = jnp.asarray(inputs_BT, jnp.int32)
        B, T = inputs_BT.shape
        t = jnp.broadcast_to(jnp.arange(start, start + T, dtype=jnp.int32), (B, T))
        prev = inputs_BT.at[:, 0].set(-1) if first_in_segment else inputs_BT
        return UnitPositions(t, prev)


def slot_embeddings(params: Params, hyper: HyperParams, pairs_BS2) -> jax.Array:
    """Input-side embeddings of every slot, float32 [B,S,C] (empty slots read row 0; they are never input)."""
    pairs_BS2 = jnp.maximum(pairs_BS2, 0)
    ea, eb = embed(params, pairs_BS2[..., 0]), embed(params, pairs_BS2[..., 1])
    return eb + _mlp(hyper.inp, ea, eb)


def slot_scorers(params: Params, hyper: HyperParams, pairs_BS2) -> tuple[jax.Array, jax.Array]:
    """Output-side (r [B,S,C], c [B,S]): slot s scores z = hidden . r_s + c_s."""
    pairs_BS2 = jnp.maximum(pairs_BS2, 0)
    out = _mlp(hyper.out, head_rows(params, pairs_BS2[..., 0]), head_rows(params, pairs_BS2[..., 1]))
    return out[..., :-1], out[..., -1]


def unit_embeddings(params: Params, hyper: HyperParams, units_BT, tables: SlotTables) -> jax.Array:
    """Units [B,T] -> raw embeddings [B,T,C]: base ids read params.emb, ids >= V the slot's hypernet output."""
    V = vocab_rows(params)
    units_BT = jnp.asarray(units_BT, jnp.int32)
    B = units_BT.shape[0]
    virt_BSC = slot_embeddings(params, hyper, jnp.broadcast_to(tables.slots_BS2, (B,) + tables.slots_BS2.shape[1:]))
    is_virt = units_BT >= V
    base = embed(params, jnp.where(is_virt, 0, units_BT))
    slot_BT = jnp.clip(units_BT - V, 0, virt_BSC.shape[1] - 1)
    virt = jnp.take_along_axis(virt_BSC, slot_BT[..., None], axis=1)
    return jnp.where(is_virt[..., None], virt, base)


def _slot_scores(params, hyper, h_BTC, pairs_BS2):
    r_BSC, c_BS = slot_scorers(params, hyper, pairs_BS2)
    return jnp.einsum("btc,bsc->bts", h_BTC, r_BSC, precision=_HI) + c_BS[:, None, :]


def _scatter(dest_BTV, idx_BTS, vals_BTS, op: str):
    B, T = idx_BTS.shape[:2]
    bi = jnp.arange(B)[:, None, None]
    ti = jnp.arange(T)[None, :, None]
    return getattr(dest_BTV.at[bi, ti, idx_BTS], op)(vals_BTS)


def unit_logits(params: Params, hyper: HyperParams, hidden_BTC, tables: SlotTables, pos: UnitPositions) -> jax.Array:
    """Hidden [B,T,C] -> logits [B,T,V+S] (base ids, then slots) whose softmax is the unit distribution.

    Slots not in the table at t and units excluded by the canonical rule get -inf. With an empty table the
    base part is bit-identical to `head_logits`.
    """
    B = hidden_BTC.shape[0]
    tables = jax.tree.map(lambda a: jnp.broadcast_to(a, (B,) + a.shape[1:]), tables)
    base_BTV = head_logits(params, hidden_BTC)
    V = base_BTV.shape[-1]
    h_BTC = hidden_BTC.astype(jnp.float32)

    pair_BTS2 = tables.pairs_at(pos.t_BT)
    first_BTS, valid_BTS = jnp.maximum(pair_BTS2[..., 0], 0), pair_BTS2[..., 0] >= 0
    use_prior_BTS = pos.t_BT[..., None] < tables.avail_BS[:, None, :]
    z_BTS = jnp.where(use_prior_BTS, _slot_scores(params, hyper, h_BTC, tables.prior_BS2),
                      _slot_scores(params, hyper, h_BTC, tables.slots_BS2))
    # log(1 + sum_{s in G_a} e^z_s) per base token a, stabilised by the group's max (a constant shift)
    zero = jnp.zeros_like(base_BTV)
    m_BTV = jax.lax.stop_gradient(_scatter(zero, first_BTS, jnp.where(valid_BTS, z_BTS, 0.0), "max"))
    m_BTS = jnp.take_along_axis(m_BTV, first_BTS, axis=-1)
    e_BTS = jnp.where(valid_BTS, jnp.exp(jnp.where(valid_BTS, z_BTS - m_BTS, 0.0)), 0.0)
    norm_BTV = m_BTV + jnp.log(jnp.exp(-m_BTV) + _scatter(zero, first_BTS, e_BTS, "add"))
    base_units = base_BTV - norm_BTV
    virt = jnp.take_along_axis(base_units, first_BTS, axis=-1) + z_BTS
    # canonical exclusion: unit t-1 = base a was emitted alone while (a, b) was in the table, so unit t
    # cannot start with b
    prev = pos.prev_BT
    pprev_BTS2 = tables.pairs_at(pos.t_BT - 1)
    blocked_BTS = (pprev_BTS2[..., 0] == prev[..., None]) & (prev[..., None] >= 0) & (prev[..., None] < V)
    blocked_BTV = _scatter(jnp.zeros(base_BTV.shape, jnp.int32), jnp.maximum(pprev_BTS2[..., 1], 0),
                           blocked_BTS.astype(jnp.int32), "max") > 0
    ok_virt = valid_BTS & ~jnp.take_along_axis(blocked_BTV, first_BTS, axis=-1)
    return jnp.concatenate([jnp.where(blocked_BTV, -jnp.inf, base_units),
                            jnp.where(ok_virt, virt, -jnp.inf)], axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "wkv_impl", "remat"))
def forward_units(params: Params, hyper: HyperParams, units_BT, state: State, tables: SlotTables,
                  pos: UnitPositions, *, config: Architecture, wkv_impl: WkvImpl | str = WkvImpl.AUTO, remat: bool = False):
    """Units [B,T] -> (logits [B,T,V+S], new State); one recurrent step per unit."""
    x = unit_embeddings(params, hyper, units_BT, tables)
    hidden, new_state = forward_hidden(params, x, state, config=config, wkv_impl=wkv_impl, remat=remat)
    return unit_logits(params, hyper, hidden, tables, pos), new_state


def unit_loss(params: Params, hyper: HyperParams, inputs_BT, targets_BT, state: State, tables: SlotTables,
              pos: UnitPositions, mask_BT=None, *, config: Architecture, wkv_impl: WkvImpl | str = WkvImpl.AUTO,
              remat: bool = False):
    """Teacher-forced CE on the canonical unit stream.

    Returns (mean nats per scored unit, (bits summed over scored units, units scored, new State)).
    Divide the bits by the text's UTF-8 bytes for strict bits per byte. `mask_BT` marks real targets
    (False on padding); every position counts when it is None.
    """
    logits, new_state = forward_units(params, hyper, inputs_BT, state, tables, pos,
                                      config=config, wkv_impl=wkv_impl, remat=remat)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll_BT = -jnp.take_along_axis(logp, jnp.asarray(targets_BT, jnp.int32)[..., None], axis=-1)[..., 0]
    m = jnp.ones(nll_BT.shape, jnp.float32) if mask_BT is None else jnp.asarray(mask_BT, jnp.float32)
    # where(): a masked-out -inf target must not turn the sum into nan
    total = jnp.sum(jnp.where(m > 0, nll_BT, 0.0))
    n = jnp.sum(m)
    return total / jnp.maximum(n, 1.0), (total / math.log(2.0), n, new_state)
