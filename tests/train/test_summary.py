"""Every `train` ends with a human summary on stderr (held-out figures, gate counts, outputs, next commands), and a
re-run of a finished demo says it is finished and how to extend or restart it (issue 25, item 2)."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
from pathlib import Path

import chex
import pytest

import rwkvjax
from rwkvjax.cli import main
from rwkvjax.train import run as run_module
from rwkvjax.train.run import DEMO_TRACES, TrainConfig, Trainer
from rwkvjax.train.summary import format_summary


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("traces") / "projects"
    shutil.copytree(DEMO_TRACES, d)
    return d


def test_a_run_reports_held_out_figures_gate_counts_and_where_its_outputs_are(model_file, traces, tmp_path):
    ck, states = tmp_path / "ck", tmp_path / "states"
    # every 2nd new window held out, so that a few steps already have a slice to read
    cfg = TrainConfig(ckpt_dir=str(ck), source=(str(traces),), steps=4, ctx_len=16, merges=False,
                      replay_per_step=1, model=str(model_file), lr=0.1, gate_slice_every=2, states=str(states),
                      state_name="shop")
    chex.clear_trace_counter()  # every Trainer compiles its own step
    out = Trainer(cfg, model=rwkvjax.load(model_file)).run(progress=False)
    held = out["heldout"]
    assert 1 <= held["windows"] <= 8  # bounded: the gate's slice, not minutes of work
    assert math.isfinite(held["frozen_bpb"]) and math.isfinite(held["tuned_bpb"])
    gate = out["gate"]
    assert gate.get("accepted", 0) + gate.get("rolled_back", 0) + gate.get("quarantined", 0) >= out["steps_run"] == 4
    text = format_summary(out, cfg)
    assert f"frozen {held['frozen_bpb']:.4f} bits/byte, tuned {held['tuned_bpb']:.4f}" in text
    assert f"{gate.get('accepted', 0)} accepted, {gate.get('rolled_back', 0)} rolled back" in text
    assert f"checkpoint: {ck}" in text and str(ck / "metrics.jsonl") in text
    assert f"published state: shop in {states}" in text
    for command in ("inspect --checkpoint", "dashboard --ckpt-dir", f"serve --model {model_file} --states {states}"):
        assert command in text, command
    json.dumps(out)  # the result stays the JSON line the command prints


def test_without_the_gate_the_summary_says_there_is_no_held_out_figure(model_file, traces, tmp_path):
    cfg = TrainConfig(ckpt_dir=str(tmp_path / "ck"), source=(str(traces),), steps=1, ctx_len=16, merges=False,
                      replay_per_step=0, model=str(model_file), gate=False)
    chex.clear_trace_counter()  # every Trainer compiles its own step
    out = Trainer(cfg, model=rwkvjax.load(model_file)).run(progress=False)
    assert out["heldout"] is None and out["gate"] is None
    text = format_summary(out, cfg)
    assert "held-out slice: none (--no-gate" in text and "generate --model" in text


def test_demo_ends_with_a_summary_and_a_finished_demo_says_how_to_extend_it(monkeypatch, capsys, tmp_path):
    real = run_module.demo_setup

    def short_demo(ckpt_dir):  # the shipped demo, 2 steps instead of 60
        cfg, model = real(ckpt_dir)
        return dataclasses.replace(cfg, steps=2, gate_slice_every=2), model

    monkeypatch.setattr(run_module, "demo_setup", short_demo)
    ck = tmp_path / "demo"
    chex.clear_trace_counter()
    assert main(["train", "--demo", "--ckpt-dir", str(ck)]) == 0
    cap = capsys.readouterr()
    first = json.loads(cap.out.strip().splitlines()[-1])
    assert first["step"] == 2 and "held-out slice" in cap.err and "accepted" in cap.err
    assert f"inspect --checkpoint {ck}" in cap.err
    metrics = (ck / "metrics.jsonl").read_text()

    # the re-run trains nothing: one line, how to extend or restart, exit 0
    chex.clear_trace_counter()
    assert main(["train", "--demo", "--ckpt-dir", str(ck)]) == 0
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert "already finished (step 2 of --steps 2)" in lines[0] and f"remove {ck}" in lines[0]
    assert "another --ckpt-dir" in lines[0]
    assert json.loads(cap.out.strip().splitlines()[-1])["already_finished"] is True
    assert (ck / "metrics.jsonl").read_text() == metrics

    # ... and the extension it names resumes this very run, to the step it names
    extend = shlex.split(lines[0].split("Extend it: ", 1)[1].split(" ; ", 1)[0])
    assert extend[:3] == ["python", "cli.py", "train"] and "--steps" in extend
    chex.clear_trace_counter()
    assert main(extend[2:]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out.strip().splitlines()[-1])["step"] == 4
