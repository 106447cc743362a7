"""The one resume rule (`train.resume.ResumeRule`): which settings are compared, how a tuple compares with the
list it was saved as, a setting the saved run does not record, and the wording of the refusal of each command."""

from __future__ import annotations

import dataclasses

import pytest

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.train.config import PretrainConfig, TrainConfig
from rwkvjax.train.resume import ResumeRule


def test_fixed_settings_only_are_compared_in_their_saved_form():
    rule = ResumeRule(fixed=("ctx_len", "corpus"))
    saved = {"ctx_len": 16, "corpus": ["a", "b"], "steps": 10}
    assert rule.change(saved, {"ctx_len": 16, "corpus": ("a", "b"), "steps": 99}) is None
    assert rule.change(saved, {"ctx_len": 32, "corpus": ("a", "b"), "steps": 10}) == \
        "setting ctx_len=32 differs from the checkpoint's 16"
    assert rule.change(saved, {"ctx_len": 16, "corpus": ("a",), "steps": 10}) == \
        "setting corpus=['a'] differs from the checkpoint's ['a', 'b']"


def test_free_settings_and_flag_names():
    rule = ResumeRule(free=("out",), as_flags=True, saved_as="the saved run's")
    assert rule.settings({"out": "x", "ctx_len": 16}) == {"ctx_len": 16}
    assert rule.change({"ctx_len": 16, "out": "y"}, {"ctx_len": 16, "out": "x"}) is None
    assert rule.change({"ctx_len": 16}, {"ctx_len": 8, "out": "x"}) == \
        "setting --ctx-len 8 differs from the saved run's 16"
    with pytest.raises(ValueError, match="not both"):
        ResumeRule(fixed=("a",), free=("b",))


def test_an_unrecorded_setting_counts_as_a_change_unless_absent_ok():
    saved = {"ctx_len": 16}
    assert ResumeRule(fixed=("ctx_len", "seed")).change(saved, {"ctx_len": 16, "seed": 0}) == \
        "setting seed=0 differs from the checkpoint's None"
    assert ResumeRule(fixed=("ctx_len", "seed"), absent_ok=True).change(saved, {"ctx_len": 16, "seed": 0}) is None


def test_the_commands_rules_refuse_with_their_remedy():
    tc = TrainConfig(ckpt_dir="ck")
    saved = dict(tc.to_dict(), dtype="bf16", steps=5)
    with pytest.raises(CheckpointMismatch, match=r"^ck: setting dtype='fp32' differs from the checkpoint's 'bf16'; "
                                                 r"keep it, or start a new --ckpt-dir$"):
        TrainConfig.RESUME.check(saved, tc.to_dict(), where="ck", remedy="keep it, or start a new --ckpt-dir")
    TrainConfig.RESUME.check(dict(tc.to_dict(), steps=5, lr=3.0), tc.to_dict(), where="ck", remedy="")
    pc = PretrainConfig(out="o", corpus=("a",))
    old = {k: v for k, v in dataclasses.asdict(pc).items() if k != "heldout_packages"}  # an older recipe
    PretrainConfig.RESUME.check(old, dataclasses.asdict(pc), where="o", remedy="")
    with pytest.raises(CheckpointMismatch, match=r"setting corpus=\['a'\] differs from the run in this folder: "
                                                 r"\['b'\]"):
        PretrainConfig.RESUME.check(dict(old, corpus=["b"]), dataclasses.asdict(pc), where="o", remedy="")
