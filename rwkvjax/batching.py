"""Windows -> one static-shape `Batch` (padding windows and positions are masked, weight 0)."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from rwkvjax.hypernet import SlotTables, UnitPositions, unit_embeddings, unit_logits
from rwkvjax.objective import Batch, UnitFns
from rwkvjax.windows import Window

# Dynamic merges: unit embeddings and scores come from the hypernetwork, per-window slot tables.
MERGED = UnitFns(
    embed=lambda p, tr, b: unit_embeddings(p, tr.hyper, b.inputs, b.extra["tables"]),
    logits=lambda p, tr, extra, h, pos: unit_logits(p, tr.hyper, h, extra["tables"], pos),
)


def make_batch(windows: Sequence[Window], weights: Sequence[float], *, batch_size: int, ctx_len: int,
               n_slots: int | None = None) -> Batch:
    """Inputs are [0, u_0, ..., u_{n-2}] (0 = separator), targets u_0..u_{n-1}; rows past len(windows) are padding."""
    if len(windows) > batch_size:
        raise ValueError(f"{len(windows)} windows do not fit a batch of {batch_size}")
    B, T = batch_size, ctx_len
    inputs = np.zeros((B, T), np.int32)
    targets = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.float32)
    weight = np.zeros((B,), np.float32)
    nbytes = np.zeros((B,), np.float32)
    slots = np.full((B, n_slots, 2), -1, np.int32) if n_slots else None
    prior = np.full((B, n_slots, 2), -1, np.int32) if n_slots else None
    avail = np.full((B, n_slots), np.iinfo(np.int32).max, np.int32) if n_slots else None
    for i, (w, wt) in enumerate(zip(windows, weights)):
        n = len(w.units)
        if not 0 < n <= T:
            raise ValueError(f"window of session {w.session} has {n} units; it must hold 1..{T}")
        targets[i, :n] = w.units
        inputs[i, 1:n] = w.units[: n - 1]
        mask[i, :n] = 1.0
        weight[i] = wt
        nbytes[i] = w.nbytes
        if n_slots:
            if w.slots is None:
                raise ValueError("merges are on but a window carries no slot table")
            slots[i], prior[i], avail[i] = w.slots, w.prior_slots, w.avail_from
    extra = None
    if n_slots:
        # each window is one dyntok segment: unit t's table is read at index t, and target 0 has no
        # previous unit of its segment (its input is the separator)
        extra = {"tables": SlotTables(jnp.asarray(slots), jnp.asarray(prior), jnp.asarray(avail)),
                 "pos": UnitPositions.of(inputs, first_in_segment=True)}
    return Batch(jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(mask), jnp.asarray(weight),
                 jnp.asarray(nbytes), extra)
