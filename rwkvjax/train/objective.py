"""Full-sequence cross-entropy of a batch of windows, starting from the trainable state.

A window of T units is fed as [0, u_0, ..., u_{T-2}] (id 0 = document separator) and every u_t is a
target, so all T units are predicted. Reported unit: bits per UTF-8 byte of the text the targets cover.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from rwkvjax.merges.units import PLAIN, SlotBatch, UnitFns
from rwkvjax.model.config import Architecture
from rwkvjax.model.rwkv7 import forward_hidden
from rwkvjax.model.units import LN2
from rwkvjax.train.remat import POLICIES
from rwkvjax.train.trainable import Trainable, initial_state



@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    inputs: jax.Array   # [B,T] int32 unit ids fed to the model
    targets: jax.Array  # [B,T] int32 next-unit targets
    mask: jax.Array     # [B,T] float32, 0 on padding
    weight: jax.Array   # [B] float32 per-window weight (replay importance weights; 0 for padding windows)
    nbytes: jax.Array   # [B] float32 UTF-8 bytes covered by the window's targets
    slots: SlotBatch | None = None  # dynamic merges: each window's slot tables and output context


HEAD_CHUNK = 128  # positions scored at once: logits never exist for the whole window (65536-row heads)


def _to_chunks(a, chunk: int):
    """[B,T,...] -> [n,B,chunk,...], the time axis padded to a multiple of `chunk`."""
    B, T = a.shape[:2]
    n = -(-T // chunk)
    a = jnp.pad(a, [(0, 0), (0, n * chunk - T)] + [(0, 0)] * (a.ndim - 2))
    return jnp.moveaxis(a.reshape((B, n, chunk) + a.shape[2:]), 1, 0)


def _from_chunks(a, T: int):
    """[n,B,chunk,...] -> [B,T,...]."""
    n, B, chunk = a.shape[:3]
    return jnp.moveaxis(a, 0, 1).reshape((B, n * chunk) + a.shape[3:])[:, :T]


def chunked_nll(logits_fn, hidden_BTC, targets_BT, per_pos, chunk: int):
    """Cross-entropy per position, computed chunk by chunk and recomputed in the backward pass.

    `per_pos`: None or a pytree of [B,T,...] arrays the logits need per position (cut into the same chunks).
    """
    @jax.checkpoint
    def one(xs):
        h, t, pos = xs
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(h, pos), t)

    split = lambda a: _to_chunks(a, chunk)
    nll = jax.lax.map(one, (split(hidden_BTC), split(targets_BT), jax.tree.map(split, per_pos)))  # [n,B,chunk]
    return _from_chunks(nll, hidden_BTC.shape[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _frozen_head_nll(params, hidden_BTC, targets_BT, units: UnitFns, chunk: int):
    """Cross-entropy per position through a head of frozen weights only (plain units), chunk by chunk.

    Each position's NLL depends on that position's hidden state alone, so its gradient w.r.t. the hidden state
    is computed with the loss (cotangent 1) and only scaled in the backward pass: the head's matmul runs twice
    per step instead of three times (forward, recomputation, input gradient). The weights get no gradient.
    """
    return chunked_nll(lambda h, _: units.logits(params, None, None, h, None), hidden_BTC, targets_BT, None,
                       chunk)


def _frozen_head_fwd(params, hidden_BTC, targets_BT, units, chunk):
    def one(xs):
        h, t = xs
        nll, pull = jax.vjp(
            lambda h: optax.softmax_cross_entropy_with_integer_labels(units.logits(params, None, None, h, None), t),
            h)
        return nll, pull(jnp.ones_like(nll))[0]

    T = hidden_BTC.shape[1]
    nll, dh = jax.lax.map(one, (_to_chunks(hidden_BTC, chunk), _to_chunks(targets_BT, chunk)))
    return _from_chunks(nll, T), _from_chunks(dh, T)


def _frozen_head_bwd(units, chunk, dh_BTC, g_BT):
    return None, g_BT[..., None] * dh_BTC, None


_frozen_head_nll.defvjp(_frozen_head_fwd, _frozen_head_bwd)


def hidden_under_policy(params, x_BTC, state, *, config: Architecture, wkv_impl="auto", remat: str = "full"):
    """`forward_hidden` with a rematerialisation policy of `rwkvjax.train.remat` ('none', 'dots' or 'full').

    'dots' wraps the whole forward in one checkpoint that keeps the unbatched matmul outputs (jax's
    `dots_with_no_batch_dims_saveable`). Measured, it keeps more than 'none' (benchmarks/RESULTS.md): a matmul of
    frozen weights needs none of its inputs in the backward pass, so its outputs are extra, and outside the layer
    scan the policy recomputes for all layers at once (the same policy per layer would need `forward_hidden` to
    take it). 'full' checkpoints each layer.
    """
    if remat not in POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose one of {', '.join(POLICIES)}")
    if remat == "dots":
        fwd = functools.partial(forward_hidden, config=config, wkv_impl=wkv_impl, remat=False)
        return jax.checkpoint(fwd, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)(
            params, x_BTC, state)
    return forward_hidden(params, x_BTC, state, config=config, wkv_impl=wkv_impl, remat=remat == "full")


def nll_per_token(params, inputs_BT, targets_BT, state, *, config: Architecture, units: UnitFns = PLAIN, hyper=None,
                  tables=None, pos=None, wkv_impl="auto", remat: str = "none", frozen_weights: bool = False,
                  with_hidden: bool = False):
    """Forward + head + cross-entropy: NLL in nats of every target [B,T] given the inputs from `state`, and the
    state after them (and with `with_hidden`, the final hidden states [B,T,C]). The one objective of pretraining,
    scoring and state tuning (`window_nll_and_hidden`).

    With merged units (`units=MERGED`), `hyper` and `tables` (`SlotTables`) are the hypernetwork and the slot
    table, `pos` the per-position `UnitPositions`. The head runs HEAD_CHUNK positions at a time, recomputed in
    the backward pass; `frozen_weights` (state tuning: no gradient reaches the weights) takes the plain head's
    gradient w.r.t. the hidden states with the loss instead (`_frozen_head_nll`). A hypernetwork's head is
    trained, so merged units always take the recomputed path.
    """
    x = units.embed(params, hyper, inputs_BT, tables)
    hidden, state = hidden_under_policy(params, x, state, config=config, wkv_impl=wkv_impl, remat=remat)
    chunk = min(HEAD_CHUNK, inputs_BT.shape[1])
    if frozen_weights and not units.merged:
        nll = _frozen_head_nll(params, hidden, targets_BT, units, chunk)
    else:
        nll = chunked_nll(lambda h, p: units.logits(params, hyper, tables, h, p), hidden, targets_BT, pos, chunk)
    return (nll, state, hidden) if with_hidden else (nll, state)


def window_nll(trainable: Trainable, params, batch: Batch, **kw):
    """Per-position NLL in nats [B,T] (masked positions are 0)."""
    return window_nll_and_hidden(trainable, params, batch, **kw)[0]


def window_nll_and_hidden(trainable: Trainable, params, batch: Batch, *, config: Architecture, units: UnitFns = PLAIN,
                          wkv_impl="auto", remat: str = "full"):
    """(`window_nll`, the final hidden states [B,T,C] it was computed from): `nll_per_token` from the trainable
    start state, the weights frozen."""
    slots = batch.slots
    nll, _, hidden = nll_per_token(
        params, batch.inputs, batch.targets, initial_state(trainable, batch.inputs.shape[0]), config=config,
        units=units, hyper=trainable.hyper, tables=None if slots is None else slots.tables,
        pos=None if slots is None else slots.pos, wkv_impl=wkv_impl, remat=remat, frozen_weights=True,
        with_hidden=True)
    # where(): a masked position may score an unavailable (-inf) slot; it must not poison the sum
    return jnp.where(batch.mask > 0, nll, 0.0), hidden


def loss_and_metrics(trainable: Trainable, params, batch: Batch, *, per_unit: bool = False,
                     keep_hidden: bool = False, **kw):
    """Weighted token-mean NLL (the optimised loss) and summed bits/bytes for reporting; with `per_unit`,
    also the NLL of every position (`unit_nll` [B,T], for the per-role figures of the training record); with
    `keep_hidden`, the final hidden states (`hidden` [B,T,C], no gradient: the update gate's canary probe reads
    the session memory's mixture from them without a second forward pass)."""
    nll_BT, hidden = window_nll_and_hidden(trainable, params, batch, **kw)
    tokens_B = jnp.sum(batch.mask, axis=1)
    loss = jnp.sum(batch.weight * jnp.sum(nll_BT, axis=1)) / jnp.maximum(jnp.sum(batch.weight * tokens_B), 1.0)
    live = (batch.weight > 0).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "bits": jnp.sum(live * jnp.sum(nll_BT, axis=1)) / LN2,
        "bytes": jnp.sum(live * batch.nbytes),
        "tokens": jnp.sum(live * tokens_B),
        "window_nll": jnp.sum(nll_BT, axis=1) / jnp.maximum(tokens_B, 1.0),  # per-window mean (surprise)
    }
    if per_unit:
        metrics["unit_nll"] = nll_BT
    if keep_hidden:
        metrics["hidden"] = jax.lax.stop_gradient(hidden)
    return loss, metrics
