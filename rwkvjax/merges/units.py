"""What a unit id is: a token of the plain vocabulary, or (dynamic merges) a token or a slot of the table.

`PLAIN` and `MERGED` are the two `UnitFns`; everything above the model (training objective, scoring) is
written once against this interface. With merges a batch carries a typed `SlotBatch` per window.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from rwkvjax.merges.hypernet import SlotTables, UnitPositions, unit_embeddings, unit_logits
from rwkvjax.model.rwkv7 import embed, head_logits


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlotBatch:
    """Per-window slot tables (the table in force at every unit) and per-position output context."""

    tables: SlotTables
    pos: UnitPositions


@dataclasses.dataclass(frozen=True)
class UnitFns:
    """embed(params, hyper, units_BT, tables) -> x_BTC (raw, pre-ln0);
    logits(params, hyper, tables, hidden_BtC, pos) -> logits_BtV' for a time chunk (pos cut to the same chunk)."""

    embed: Callable
    logits: Callable
    merged: bool


PLAIN = UnitFns(embed=lambda p, hyper, units, tables: embed(p, units),
                logits=lambda p, hyper, tables, h, pos: head_logits(p, h), merged=False)
MERGED = UnitFns(embed=unit_embeddings, logits=lambda p, hyper, tables, h, pos: unit_logits(p, hyper, h, tables, pos),
                 merged=True)
