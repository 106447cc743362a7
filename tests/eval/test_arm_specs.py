"""Evaluation arms as data: an arm the table does not hold runs from its spec through the same code as the
table's; specs are checked; the table keeps the CLI's arm names in their order."""

from __future__ import annotations

import numpy as np
import pytest

import rwkvjax
from rwkvjax.errors import CheckpointMismatch, ConfigError
from rwkvjax.eval.config import ARM_SPECS, ARMS, ArmSpec, EvalConfig, check_arms
from rwkvjax.eval.prequential import run_eval, saved_results
from rwkvjax.eval.report import write_eval_report
from rwkvjax.model.init import init_params
from rwkvjax.model.value import Model
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.run import DEMO_TRACES

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)
# neither is in the table: a gated learner with reducible-loss replay, and a memory emptied at every session
# mixed with the *tuned* arm's model (the table's emptied memory reads the frozen model)
NEW = {"frozen": ARM_SPECS["frozen"], "tuned": ARM_SPECS["tuned"],
       "gated_reducible": ArmSpec(learns=True, replay="reducible", gate=True),
       "tuned_memory_alone": ArmSpec(memory_of="tuned", memory_keeps=False)}


def test_a_new_arm_runs_from_its_spec_through_the_same_path(tmp_path):
    assert all(NEW[n] not in ARM_SPECS.values() for n in ("gated_reducible", "tuned_memory_alone"))
    canary = tmp_path / "canary.txt"
    canary.write_text("The quick brown fox jumps over the lazy dog.\n" * 4)
    cfg = EvalConfig(traces=str(DEMO_TRACES), out=str(tmp_path / "out"), ctx_len=32, max_windows_per_session=3,
                     canaries=(str(canary),), bootstrap=100, arms=("frozen", "tuned"))
    model = Model(SMALL, init_params(SMALL, 0, live_output=True), ByteTokenizer())
    res = run_eval(cfg, model, log=lambda m: None, specs=NEW)
    assert res["arms"] == list(NEW)
    first, later = res["sessions"][0]["bits"], res["sessions"][1:]
    train = {s["sid"] for s in res["sessions"] if not s["heldout"]}
    held = {s["sid"] for s in res["sessions"] if s["heldout"]}
    # the new learner: nothing learned before the first session, then it moves; the gate ran every update
    np.testing.assert_array_equal(first["gated_reducible"], first["frozen"])
    assert any(not np.array_equal(s["bits"]["gated_reducible"], s["bits"]["frozen"]) for s in later)
    assert set(res["trained_sessions"]["gated_reducible"]) == train and not held & train
    gate = res["timing"]["gated_reducible"]["gate"]  # what the gate decided, by outcome
    assert sum(gate.values()) > 0 and res["timing"]["gated_reducible"]["updates"] > 0
    assert res["timing"]["tuned"]["gate"] is None
    # the new memory arm: emptied at each session, it learns nothing across sessions, yet beats its model...
    assert res["trained_sessions"]["tuned_memory_alone"] == []
    for s in res["sessions"]:
        assert s["bits"]["tuned_memory_alone"].sum() < s["bits"]["tuned"].sum()
    # ...and its canary scores follow its base arm's S0, which training moves (the table's `memory_alone`,
    # on the frozen model, never changes)
    canary_series = [c["canary.txt"] for c in res["canary"]["tuned_memory_alone"]]
    assert len(canary_series) == 1 + len(res["sessions"]) and len(set(canary_series)) > 1
    text = write_eval_report(res, tmp_path / "report", "cmd").read_text()
    assert "| gated_reducible |" in text and "| tuned_memory_alone |" in text

    # the specs are part of what a continuation must match; the report of the saved sessions needs them too
    with pytest.raises(CheckpointMismatch, match="the arms' specs"):
        run_eval(cfg, model, log=lambda m: None)
    assert saved_results(cfg) is None
    saved = saved_results(cfg, specs=NEW)
    assert saved["arms"] == list(NEW) and saved["canary"] == res["canary"]


def test_specs_are_checked():
    for bad, why in ((dict(replay="newest", learns=True), "replay 'newest'"),
                     (dict(gate=True), "arm that learns"),
                     (dict(learns=True, gate=True), "needs a replay buffer"),
                     (dict(memory_of="frozen", learns=True), "no model of its own"),
                     (dict(reset_of="tuned", memory_of="tuned"), "not both"),
                     (dict(learns=True, merges=True, carry=True), "no carry")):
        with pytest.raises(ConfigError, match=why):
            ArmSpec(**bad)
    with pytest.raises(ConfigError, match="add tuned to --arms"):
        check_arms({"frozen": ARM_SPECS["frozen"], "m": ArmSpec(memory_of="tuned")})
    with pytest.raises(ConfigError, match="no plain-token model of its own"):
        check_arms({"merges": ARM_SPECS["merges"], "m": ArmSpec(reset_of="merges")})
    # the table's checks, as the CLI reports them
    with pytest.raises(ConfigError, match=r"^arm frozen_reset is scored from the frozen arm's state; add frozen"):
        EvalConfig(traces="t", out="o", arms=("frozen_reset",))
    with pytest.raises(ConfigError, match=r"^arm tuned_memory mixes the tuned_replay arm's model with a memory"):
        EvalConfig(traces="t", out="o", arms=("frozen", "tuned_memory"))
    with pytest.raises(ConfigError, match=r"only used by the 'merges' arm"):
        EvalConfig(traces="t", out="o", arms=("frozen",), hypernet="h.safetensors")


def test_the_table_keeps_the_cli_arms_in_report_order():
    assert ARMS == ("frozen", "frozen_reset", "carry", "tuned", "tuned_reset", "tuned_tbptt", "tuned_replay",
                    "tuned_replay_reducible", "tuned_gated", "merges", "memory_alone", "memory", "tuned_memory")
    assert len(set(ARM_SPECS.values())) == len(ARMS)  # no two arms the same
