"""Full-sequence cross-entropy of a batch of windows, starting from the trainable state.

A window of T units is fed as [0, u_0, ..., u_{T-2}] (id 0 = document separator) and every u_t is a
target, so all T units are predicted. Reported unit: bits per UTF-8 byte of the text the targets cover.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from rwkvjax.merges.units import PLAIN, SlotBatch, UnitFns
from rwkvjax.model.config import Config
from rwkvjax.model.rwkv7 import forward_hidden
from rwkvjax.train.trainable import Trainable, initial_state

LN2 = math.log(2.0)


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


def _chunked_nll(logits_fn, hidden_BTC, targets_BT, per_pos, chunk: int):
    """Cross-entropy per position, computed chunk by chunk and recomputed in the backward pass.

    `per_pos`: None or a pytree of [B,T,...] arrays the logits need per position (cut into the same chunks).
    """
    B, T, C = hidden_BTC.shape
    n = -(-T // chunk)
    pad = n * chunk - T
    split = lambda a: jnp.moveaxis(jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
                                   .reshape((B, n, chunk) + a.shape[2:]), 1, 0)

    @jax.checkpoint
    def one(xs):
        h, t, pos = xs
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(h, pos), t)

    nll = jax.lax.map(one, (split(hidden_BTC), split(targets_BT), jax.tree.map(split, per_pos)))  # [n,B,chunk]
    return jnp.moveaxis(nll, 0, 1).reshape(B, n * chunk)[:, :T]


def window_nll(trainable: Trainable, params, batch: Batch, *, config: Config, units: UnitFns = PLAIN,
               wkv_impl="auto", remat: bool = True):
    """Per-position NLL in nats [B,T] (masked positions are 0)."""
    B = batch.inputs.shape[0]
    tables = None if batch.slots is None else batch.slots.tables
    per_pos = None if batch.slots is None else batch.slots.pos
    x = units.embed(params, trainable.hyper, batch.inputs, tables)
    hidden, _ = forward_hidden(params, x, initial_state(trainable, B), config=config, wkv_impl=wkv_impl, remat=remat)
    nll = _chunked_nll(lambda h, pos: units.logits(params, trainable.hyper, tables, h, pos), hidden, batch.targets,
                       per_pos, min(HEAD_CHUNK, batch.inputs.shape[1]))
    # where(): a masked position may score an unavailable (-inf) slot; it must not poison the sum
    return jnp.where(batch.mask > 0, nll, 0.0)


def loss_and_metrics(trainable: Trainable, params, batch: Batch, *, per_unit: bool = False, **kw):
    """Weighted token-mean NLL (the optimised loss) and summed bits/bytes for reporting; with `per_unit`,
    also the NLL of every position (`unit_nll` [B,T], for the per-role figures of the training record)."""
    nll_BT = window_nll(trainable, params, batch, **kw)
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
    return loss, metrics
