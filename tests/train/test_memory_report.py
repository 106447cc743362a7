"""The at-scale memory report of benchmarks/memory.py, run for a small config: compiled for abstract weights
(nothing allocated), with the orderings the 1.5B table relies on."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import rwkvjax
from benchmarks.memory import paper

SMALL = rwkvjax.Architecture(256, 64, 2, 256, 32, 32, 32, 32)


def test_paper_report_for_a_small_config():
    rows = paper(SMALL, ctxs=(16, 64), batches=(2,), policies=("none", "full"), prefill=8, dtype=jnp.bfloat16,
                 target_gb=1.0)
    train = {(r["ctx"], r["remat"]): r for r in rows if r["what"] == "train step"}
    fwd = {r["T"]: r for r in rows if r["what"] != "train step"}
    assert set(train) == {(16, "none"), (16, "full"), (64, "none"), (64, "full")}
    assert set(fwd) == {1, 8, 16, 64}
    weights = SMALL.n_params() * 2  # bf16
    for r in rows:
        assert abs(r["weights_gb"] * 2 ** 30 - weights) < 0.01 * weights, r
        assert r["peak_gb"] >= r["weights_gb"] and r["fits_target"]
        assert r["peak_gb"] == pytest.approx(r["arguments_gb"] + r["outputs_gb"] + r["temp_gb"] - r["donated_gb"])
    # keeping every layer's activations costs memory that grows with the context; recomputing costs less
    assert train[(64, "none")]["temp_gb"] > train[(16, "none")]["temp_gb"]
    assert train[(64, "full")]["temp_gb"] < train[(64, "none")]["temp_gb"]
    assert train[(64, "none")]["auto_on_target"] == "none"   # a tiny model fits 1 GB
    # one decode step needs no per-token memory of the context: less than any forward over many tokens
    assert fwd[1]["peak_gb"] < fwd[8]["peak_gb"] < fwd[64]["peak_gb"]
    assert fwd[1]["state_gb"] * 2 ** 30 == 4 * 2 * SMALL.n_layer * (2 * SMALL.n_embd + SMALL.n_embd * 64)
