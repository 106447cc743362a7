"""Nothing lost (issue 17): one trainer per folder, damaged checkpoints, a full disk, torn metrics, no data,
signals, and checkpoints used with the wrong model or dtype."""

from __future__ import annotations

import json
import logging
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
from rwkvjax.errors import CheckpointMismatch, DataError
from rwkvjax.io.lock import RunLock, RunLocked
from rwkvjax.model.init import init_params
from rwkvjax.model.value import Model
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.run import DEMO_TRACES, TrainConfig, Trainer
from tests.conftest import REPO
from tests.tools.held_run import start_held, wait_announced
from tests.train.conftest import SMALL


def _cfg(ckpt, model_file, **kw):
    base = dict(ckpt_dir=str(ckpt), source=(str(DEMO_TRACES),), steps=3, ctx_len=16, merges=False,
                replay_per_step=1, save_every=1, keep=5, model=str(model_file), gate=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run3(tmp_path_factory, model_file, model) -> Path:
    """A finished 3-step run with a checkpoint at every step (copied by the tests that damage it)."""
    ck = tmp_path_factory.mktemp("run3") / "ck"
    out = Trainer(_cfg(ck, model_file), model=model).run(progress=False)
    assert out["step"] == 3
    return ck


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
    import chex
    chex.clear_trace_counter()  # every Trainer compiles its own step


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


# ----- item 2: locks -----

def test_a_second_trainer_on_the_folder_is_refused_naming_the_first(run3, tmp_path, model_file, model):
    ck = tmp_path / "ck"
    shutil.copytree(run3, ck)
    first = Trainer(_cfg(ck, model_file, steps=6), model=model)
    try:
        with pytest.raises(RunLocked, match=rf"pid {os.getpid()}.*started"):
            Trainer(_cfg(ck, model_file, steps=6), model=model)
        # readers work while it holds the folder
        from rwkvjax.eval.inspect import inspect
        assert inspect(ck)["step"] == 3
        r = subprocess.run([sys.executable, str(REPO / "cli.py"), "train", "--source", str(DEMO_TRACES), "--model",
                            str(model_file), "--ckpt-dir", str(ck), "--ctx-len", "16", "--no-gate"], env=_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
        assert f"pid {os.getpid()}" in r.stderr and "in use by `train`" in r.stderr
    finally:
        first.close()
    again = Trainer(_cfg(ck, model_file, steps=6), model=model)  # released: the next one takes it
    again.close()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rwkvjax.io.lock import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}, 'train').acquire(); print('held', flush=True); "
                               "time.sleep(600)"], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"pid {holder.pid}"):
            RunLock(tmp_path, "train").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        RunLock(tmp_path, "train").acquire().release()
    finally:
        holder.kill()


def test_readers_do_not_create_folders_at_mistyped_paths(tmp_path):
    for argv in (["inspect", "--checkpoint", str(tmp_path / "typo")],
                 ["score", "--model", str(REPO / "rwkvjax/data/demo_model.safetensors"), "--checkpoint",
                  str(tmp_path / "typo2"), str(REPO / "README.md")]):
        r = subprocess.run([sys.executable, str(REPO / "cli.py"), *argv], env=_env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and "no such checkpoint folder" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


# ----- item 6: damaged checkpoints, a full disk, torn metrics -----

def _damage(ck: Path, how: str) -> None:
    newest = max(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    if how == "truncated arrays":
        for f in (ck / str(newest) / "trainable").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(f.read_bytes()[:10])
    elif how == "missing host":
        shutil.rmtree(ck / str(newest) / "host")
    elif how == "empty step folder":
        (ck / str(newest + 1)).mkdir()


@pytest.mark.parametrize("how", ["truncated arrays", "missing host", "empty step folder"])
def test_a_damaged_newest_step_falls_back_with_one_warning(how, run3, tmp_path, model_file, model, caplog):
    from rwkvjax.eval.inspect import inspect
    from rwkvjax.io.tuned_state import load_tuned_state
    ck = tmp_path / "ck"
    shutil.copytree(run3, ck)
    _damage(ck, how)
    used = 2 if how != "empty step folder" else 3
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.checkpoint"):
        assert inspect(ck)["step"] == used
    damaged = [r for r in caplog.records if "damaged checkpoint step" in r.getMessage()]
    assert len(damaged) == 1 and f"using step {used}" in damaged[0].getMessage()
    load_tuned_state(ck, model)  # --checkpoint users read the intact step too
    # a resumed run moves the damaged step aside (kept, not deleted) and trains on from the intact one
    out = Trainer(_cfg(ck, model_file, steps=5), model=model).run(progress=False)
    assert out["step"] == 5
    assert any(p.name.endswith(".damaged") for p in ck.iterdir())
    assert inspect(ck)["step"] == 5


def test_a_full_disk_stops_at_the_first_failed_save_and_keeps_the_last_good_step(tmp_path, model_file):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk for real")
    try:
        r = subprocess.run([sys.executable, str(REPO / "cli.py"), "train", "--source", str(DEMO_TRACES), "--model",
                            str(model_file), "--ckpt-dir", str(disk / "ck"), "--steps", "60", "--save-every", "1",
                            "--keep", "100", "--ctx-len", "16", "--replay-per-step", "1", "--no-gate",
                            "--progress-every", "0"],  # (no progress lines: the error is all stderr says)
                           env=_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 2, r.stderr[-3000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], r.stderr[-3000:]
        last = int(lines[0].split("the newest saved step is ")[1].split(";")[0])
        from rwkvjax.eval.inspect import inspect
        assert inspect(disk / "ck")["step"] == last  # the last good step reads back whole
        assert not list((disk / "ck").glob("*orbax-checkpoint-tmp*"))  # the partial step gave its space back
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_torn_metrics_line_is_repaired_on_resume_and_skipped_by_readers(run3, tmp_path, model_file, model):
    from rwkvjax.eval.inspect import read_metrics
    ck = tmp_path / "ck"
    shutil.copytree(run3, ck)
    with open(ck / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.2')  # killed mid-write
    assert [r["step"] for r in read_metrics(ck)] == [1, 2, 3]
    Trainer(_cfg(ck, model_file, steps=5), model=model).run(progress=False)
    lines = (ck / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(x)["step"] for x in lines)  # every line parses: the torn one was cut off
    assert [r["step"] for r in read_metrics(ck)] == [1, 2, 3, 4, 5]
    # an old file with a torn line in the middle (appended to by an older version) still reads
    (ck / "metrics.jsonl").write_text(lines[0] + "\n" + '{"step": 9, "lo' + lines[1] + "\n" + lines[2] + "\n")
    assert [r["step"] for r in read_metrics(ck)] == [1, 3]


# ----- item 7: no data -----

@pytest.mark.parametrize("kind", ["empty folder", "0-byte file", "binary file", "not a transcript"])
def test_no_sessions_says_so_and_writes_nothing(kind, tmp_path, model_file, model):
    src = tmp_path / "src"
    src.mkdir()
    if kind == "0-byte file":
        (src / "a.jsonl").write_bytes(b"")
    elif kind == "binary file":
        (src / "a.jsonl").write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    elif kind == "not a transcript":
        (src / "a.jsonl").write_text('{"name": "x", "version": 1}\n[1, 2, 3]\n')
    ck = tmp_path / "ck"
    with pytest.raises(DataError, match=f"no sessions found in {src}"):
        Trainer(_cfg(ck, model_file, source=(str(src),)), model=model).run(progress=False)
    assert not ck.exists()


# ----- item 9: the wrong model or dtype for a checkpoint -----

def test_checkpoint_readers_check_the_base_model_and_the_dtype(run3, model_file, model):
    from rwkvjax.io.tuned_state import load_tuned_state
    with pytest.raises(CheckpointMismatch, match="different base model"):
        load_tuned_state(run3, Model(SMALL, init_params(SMALL, 1, live_output=True), ByteTokenizer()))
    bf16 = rwkvjax.load(model_file, dtype="bf16")
    with pytest.raises(CheckpointMismatch, match="dtype differs.*--dtype fp32"):
        load_tuned_state(run3, bf16)
    with pytest.raises(CheckpointMismatch, match="dtype=.bf16. differs"):
        Trainer(_cfg(run3, model_file, dtype="bf16"), model=bf16)


# ----- item 4: signals -----

def test_sigterm_saves_and_exits_143(model_file, tmp_path):
    ck = tmp_path / "ck"
    p = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "train", "--source", str(DEMO_TRACES), "--model",
                          str(model_file), "--ckpt-dir", str(ck), "--steps", "10000", "--save-every", "100000",
                          "--ctx-len", "16", "--replay-per-step", "1", "--no-gate"], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None and not ((ck / "metrics.jsonl").is_file()
                                                               and (ck / "metrics.jsonl").stat().st_size):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 143, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["signal"] == "SIGTERM" and summary["step"] >= 1
    from rwkvjax.eval.inspect import inspect
    assert inspect(ck)["step"] == summary["step"]  # the step reached was saved on the way out


def test_pretrain_stopped_inside_a_segment_resumes_exactly(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    import rwkvjax.train.pretrain as pt
    from rwkvjax.train.config import PretrainConfig
    corpus = tmp_path / "corpus"
    stdlib = Path(json.__file__).parents[1]
    for pkg in ("json", "html", "logging"):
        shutil.copytree(stdlib / pkg, corpus / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    kw = dict(corpus=(str(corpus),), n_layer=1, n_embd=64, ctx_len=16, windows_per_segment=4, batch=2, steps=8,
              eval_every=4, save_every=4, eval_bytes=256, warmup=2, heldout_packages=("corpus/html",))
    pt.pretrain(PretrainConfig(out=str(tmp_path / "ref"), **kw), log=lambda m: None)

    real_make_steps = pt.make_steps

    def make_steps(*a, **k):  # Ctrl-C during the 6th step: two windows into the second segment of four
        train_step, eval_window = real_make_steps(*a, **k)
        calls = []

        def step_then_signal(*args):
            out = train_step(*args)
            calls.append(1)
            if len(calls) == 6:
                os.kill(os.getpid(), signal.SIGINT)
            return out
        return step_then_signal, eval_window

    cfg = PretrainConfig(out=str(tmp_path / "int"), **kw)
    with monkeypatch.context() as mp:
        mp.setattr(pt, "make_steps", make_steps)
        with pytest.raises(KeyboardInterrupt):
            pt.pretrain(cfg, log=lambda m: None)
    host = json.loads((tmp_path / "int" / "ckpt" / "6" / "host" / "metadata").read_text())
    assert host["step"] == 6 and host["mid_segment"] is True
    pt.pretrain(cfg, log=lambda m: None)
    a = load_file(str(tmp_path / "int" / "model.safetensors"))
    b = load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_hypernet_interrupted_after_training_keeps_the_network_and_exits_130(tmp_path):
    out = tmp_path / "h.safetensors"
    # The measurement after training (its speed comparison first) announces itself and is repeated until the
    # signal (`tests/tools/held_run.py`): Ctrl-C lands inside its real JAX work however fast the machine is.
    # Polling for the file and then signalling let a fast measurement end first (exit 0, nothing interrupted).
    p = start_held("rwkvjax.eval.hypernet", "train_speed",
                   [str(REPO / "cli.py"), "hypernet", "--traces", str(DEMO_TRACES), "--out", str(out), "--model",
                    str(REPO / "rwkvjax/data/demo_model.safetensors"), "--ctx-len", "64", "--batch", "2", "--steps",
                    "30", "--speed-steps", "2"], mode="repeat", env=_env())
    try:
        early = wait_announced(p, timeout_s=600)
        assert out.is_file()  # the file appears once training is over, before the measurement
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=300)
        err = early + err
    finally:
        p.kill()
    assert p.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Segmentation" not in err and "Traceback" not in err
    from rwkvjax.merges.hypernet_io import load_hypernet
    load_hypernet(out, rwkvjax.load(REPO / "rwkvjax/data/demo_model.safetensors").arch)


def test_a_second_pretrain_on_the_folder_is_refused(tmp_path):
    from rwkvjax.train.config import PretrainConfig
    from rwkvjax.train.pretrain import pretrain
    held = RunLock(tmp_path / "out", "pretrain").acquire()
    try:
        with pytest.raises(RunLocked, match=r"in use by `pretrain` \(pid \d+"):
            pretrain(PretrainConfig(out=str(tmp_path / "out"), corpus=(str(tmp_path),)), log=lambda m: None)
    finally:
        held.release()
