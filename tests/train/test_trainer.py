"""The training loop end to end: CLI, exact resume after SIGKILL, base-model guard, inspect, merge-stats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rwkvjax
from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.model.init import init_params
from rwkvjax.model.value import Model
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.run import DEMO_TRACES, TrainConfig, Trainer
from tests.conftest import REPO
from tests.tools.kill_resume import run_killed
from tests.train.conftest import SMALL


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("traces") / "projects"
    shutil.copytree(DEMO_TRACES, d)
    return d


def _train_argv(model, traces, ckpt, steps, extra=()):
    return [sys.executable, str(REPO / "cli.py"), "train", "--source", str(traces), "--model", str(model),
            "--ckpt-dir", str(ckpt), "--steps", str(steps), "--ctx-len", "32", "--replay-per-step", "2",
            "--save-every", "2", "--lr", "0.1", "--merges", "--merge-slots", "16", *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _final(ckpt):
    ck = TrainCheckpointer(ckpt, async_save=False)
    arrays, host = ck.restore_trainable_arrays(), ck.restore_host()
    ck.close()
    return arrays, host


def test_resume_after_sigkill_neither_loses_nor_repeats(small_model_file, traces, tmp_path):
    steps = 12
    ref = tmp_path / "uninterrupted"
    r = subprocess.run(_train_argv(small_model_file, traces, ref, steps), env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "killed"
    # killed after steps 3 and 6 of 12, as the run logs them: both kills land whatever the machine's speed
    assert run_killed(_train_argv(small_model_file, traces, killed, steps), killed, _env(), at_steps=(3, 6)) == 2

    a_ref, h_ref = _final(ref)
    a_kill, h_kill = _final(killed)
    assert h_kill["step"] == h_ref["step"] == steps
    assert h_kill["cursor"] == h_ref["cursor"]                # same events consumed, none twice
    assert h_kill["assembler"] == h_ref["assembler"]          # same pending tokens
    assert h_kill["tokens_seen"] == h_ref["tokens_seen"]
    assert h_kill["replay"]["priority"] == h_ref["replay"]["priority"]
    assert h_kill["dyntok"] == h_ref["dyntok"]
    for x, y in zip(_leaves(a_kill), _leaves(a_ref)):
        np.testing.assert_array_equal(x, y)

    # the metrics log holds every step once after de-duplicating re-logged steps
    from rwkvjax.eval.inspect import read_metrics
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, steps + 1))


def _leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_resume_refuses_another_base_model(small_model_file, traces, tmp_path):
    cfg = TrainConfig(ckpt_dir=str(tmp_path / "ck"), source=(str(traces),), steps=1, ctx_len=16, merges=False,
                      replay_per_step=0, model=str(small_model_file))
    Trainer(cfg, model=rwkvjax.load(small_model_file)).run(progress=False)
    other = Model(SMALL, init_params(SMALL, 1, live_output=True), ByteTokenizer())
    with pytest.raises(CheckpointMismatch, match="different base model"):
        Trainer(cfg, model=other)
    with pytest.raises(CheckpointMismatch, match="ctx_len"):
        Trainer(TrainConfig(**{**cfg.to_dict(), "ctx_len": 32}), model=rwkvjax.load(small_model_file))


def test_inspect_and_merge_stats_cli(small_model_file, traces, tmp_path):
    ck = tmp_path / "ck"
    r = subprocess.run(_train_argv(small_model_file, traces, ck, 4), env=_env(), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    cli = [sys.executable, str(REPO / "cli.py")]
    png = tmp_path / "curve.png"
    r = subprocess.run([*cli, "inspect", "--checkpoint", str(ck), "--json", "--plot", str(png)], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["step"] == 4 and len(rep["state_norms"]["per_layer"]) == SMALL.n_layer
    assert rep["state_norms"]["total"] > 0 and rep["replay"]["size"] >= 1 and rep["hypernet"]
    assert png.stat().st_size > 1000
    r = subprocess.run([*cli, "merge-stats", "--checkpoint", str(ck), "--top", "5"], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads(r.stdout)
    assert st["promotions"] >= 1 and len(st["top_merges"]) <= 5 and st["compression_over_time"]
    assert all("text" in m and "age_base_tokens" in m for m in st["top_merges"])
    host = (ck / "4" / "host")
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in host.iterdir())

    # score and generate apply exactly the state training saved
    text = tmp_path / "t.txt"
    text.write_text("def main():\n    return 0\n" * 4)
    score = lambda *extra: subprocess.run([*cli, "score", "--model", str(small_model_file), *extra, str(text)],
                                          env=_env(), capture_output=True, text=True, timeout=300)
    base, tuned = score(), score("--checkpoint", str(ck))
    assert base.returncode == tuned.returncode == 0, tuned.stderr[-2000:]
    bpb = lambda r: float(next(f for f in r.stdout.strip().splitlines()[-1].split("\t")
                               if f.endswith("bits/byte")).split()[0])  # the "total" line's "<x> bits/byte"
    assert bpb(base) != bpb(tuned)
    from rwkvjax.io.tuned_state import load_tuned_state
    st = load_tuned_state(ck, rwkvjax.load(small_model_file))
    arrays, _ = _final(ck)
    np.testing.assert_array_equal(np.asarray(st.wkv[:, 0]), np.asarray(arrays["wkv"]))
    g = subprocess.run([*cli, "generate", "--model", str(small_model_file), "--checkpoint", str(ck), "--prompt",
                        "def ", "--max-tokens", "8", "--temperature", "0"], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert g.returncode == 0, g.stderr[-2000:]


def test_ctrl_c_saves_and_exits_130(small_model_file, traces, tmp_path):
    ck = tmp_path / "ck"
    p = subprocess.Popen(_train_argv(small_model_file, traces, ck, 10_000, ["--save-every", "100000"]), env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = ck / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None and not (metrics.is_file() and metrics.stat().st_size):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-3000:]  # saved, then the shell's status for Ctrl-C
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped"] == "interrupted" and summary["step"] >= 1 and summary["signal"] == "SIGINT"
    _, host = _final(ck)
    assert host["step"] == summary["step"]  # the step reached was committed on the way out


def test_reducible_surprise_replay_runs_in_the_loop(small_model_file, traces, tmp_path):
    cfg = TrainConfig(ckpt_dir=str(tmp_path / "ck"), source=(str(traces),), steps=4, ctx_len=16,
                      replay_priority="reducible", replay_per_step=2, model=str(small_model_file), merge_slots=16)
    out = Trainer(cfg, model=rwkvjax.load(small_model_file)).run(progress=False)
    assert out["step"] == 4
    _, host = _final(tmp_path / "ck")
    rep = host["replay"]
    assert len(rep["priority"]) == 4 and rep["settings"]["priority"] == "reducible"
    # priority = NLL under the current state minus NLL under the untuned model: small, both signs possible
    assert all(abs(p) < 5 for p in rep["priority"])
    assert all(f is not None for f in rep["nll_frozen"])  # the buffer keeps each window's frozen NLL


def test_train_writes_its_tuned_state_into_the_store(small_model_file, traces, tmp_path):
    from rwkvjax.io.states import StateStore
    from rwkvjax.model.params import params_hash
    cfg = TrainConfig(ckpt_dir=str(tmp_path / "ck"), source=(str(traces),), steps=2, ctx_len=16, merges=False,
                      replay_per_step=0, model=str(small_model_file), states=str(tmp_path / "states"),
                      state_name="shopcart")
    model = rwkvjax.load(small_model_file)
    Trainer(cfg, model=model).run(progress=False)
    store = StateStore(tmp_path / "states")
    rec = store.get("shopcart")
    assert rec.base_hash == params_hash(model.params) and rec.source["step"] == 2
    arrays, _ = _final(tmp_path / "ck")
    np.testing.assert_array_equal(store.arrays(rec)["wkv"], np.asarray(arrays["wkv"]))
