"""`eval` keeps what it finished: atomic progress files, SIGTERM through the CLI (exit 143, partial report, the
sessions kept), a verdict only from two or more sessions, a missing optional dependency named before any work."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

import rwkvjax
from rwkvjax.atomic import atomic_write
from rwkvjax.cli import main
from rwkvjax.eval.progress import Progress
from rwkvjax.eval.report import summarize
from rwkvjax.train.run import DEMO_TRACES
from tests.conftest import REPO
from tests.tools.held_run import start_held, wait_announced

TINY = rwkvjax.Architecture(256, 32, 1, 64, 16, 16, 16, 16, head_size=16)


def _fake_results(gains: list[float], heldout: list[bool]) -> dict:
    """Results of arms frozen and tuned over sessions of 100 one-byte tokens; tuned saves `gain` bits/byte."""
    sessions = []
    for i, (g, h) in enumerate(zip(gains, heldout)):
        bits = np.full(100, 3.0)
        sessions.append({"sid": f"s{i}", "heldout": h, "bytes": 100, "tokens": 100, "nbytes": np.ones(100, np.int32),
                         "roles": np.zeros(100, np.int8), "bits": {"frozen": bits, "tuned": bits - g},
                         "compressors": {}})
    timing = {"updates": 0, "train_seconds": 0.0, "gate": None, "updates_per_s": None, "train_tokens_per_s": None,
              "score_tokens_per_s": 1.0}
    return {"config": {"bootstrap": 500}, "sessions": sessions, "arms": ["frozen", "tuned"],
            "canary": {"frozen": [], "tuned": []}, "canary_bytes": {}, "compressors": [],
            "timing": {"frozen": timing, "tuned": timing}}


def test_verdict_needs_two_sessions_of_a_stream():
    two = summarize(_fake_results([0.1, 0.2, 0.1, 0.3], [False, False, True, True]))
    assert two["verdict"]["heldout"] == {"n_sessions": 2, "by_arm": {"tuned": "better than frozen"}, "note": None}
    lo, hi = two["arms"]["tuned"]["heldout"]["gain_ci95"]
    assert 0 < lo <= hi
    one = summarize(_fake_results([0.1, 0.2, 0.3], [False, False, True]))
    assert one["verdict"]["heldout"]["by_arm"] is None
    assert one["verdict"]["heldout"]["note"] == "a verdict needs at least 2 held-out sessions; this run has 1"
    assert one["arms"]["tuned"]["heldout"]["gain_ci95"] is None  # a one-session "interval" would have zero width
    assert one["verdict"]["train"]["by_arm"] == {"tuned": "better than frozen"}


def test_atomic_write_leaves_the_old_file_whole_on_an_interrupt(tmp_path):
    path = tmp_path / "x.npz"
    atomic_write(path, lambda f: f.write(b"old"))

    def half(f):
        f.write(b"new, half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_missing_plot_extra_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "report"
    # the model does not exist either: the extra is checked first, before anything is loaded
    assert main(["eval", "--traces", str(DEMO_TRACES), "--out", str(out), "--model", str(tmp_path / "no.bin")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: eval's report (prequential.png) needs matplotlib: install the `plot` extra: "
                   "pip install -e '.[plot]'")
    assert not out.exists()
    assert main(["inspect", "--checkpoint", str(tmp_path / "none"), "--plot", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.strip() == ("error: --plot needs matplotlib: install the `plot` extra: "
                                               "pip install -e '.[plot]'")


def test_max_sessions_must_be_positive(capsys):
    assert main(["eval", "--traces", "x", "--out", "y", "--max-sessions", "0"]) == 2
    assert "--max-sessions 0: must be > 0" in capsys.readouterr().err


def test_sigterm_keeps_the_finished_sessions_and_writes_their_report(tmp_path):
    """The real signal path: `cli.py eval` in a subprocess, SIGTERM once the first session is saved. The run is
    held after the line that reports the first session (`tests/tools/held_run.py`), so the signal lands with two
    sessions to go however fast the machine is (waiting for the session's file and then signalling let a fast run
    finish the last two sessions first)."""
    from rwkvjax.io.convert import save_official
    from rwkvjax.model.init import init_params
    model = save_official(init_params(TINY, 0, live_output=True), TINY, tmp_path / "m.safetensors", dtype="fp32")
    canary = tmp_path / "canary.txt"
    canary.write_text("The quick brown fox jumps over the lazy dog.\n" * 4)
    out = tmp_path / "report"
    # `eval` reports each saved session with a line "[i/3] ..." through `cli.eval._say`: held after "[1/"
    proc = start_held("rwkvjax.cli.eval", "_say",
                      [str(REPO / "cli.py"), "eval", "--traces", str(DEMO_TRACES), "--out", str(out), "--model", model,
                       "--arms", "frozen", "--ctx-len", "16", "--canaries", str(canary), "--bootstrap", "100"],
                      prefix="[1/", mode="after", cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        early = wait_announced(proc, timeout_s=240)  # the first session, its file and the arms after it
        assert (out / "progress" / "arms.npz").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        err = early + err
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().endswith("terminated")
    done = Progress(out).done()
    assert 1 <= done < 3, err
    assert done == 1, err  # the signal came with two sessions to go
    files = sorted(p.name for p in (out / "progress").iterdir())
    assert files == ["arms.npz", "run.json"] + [f"session-{i:04d}.npz" for i in range(len(files) - 2)]
    report = (out / "REPORT.md").read_text()
    assert f"interrupted after {done} of 3 sessions" in report and (out / "summary.json").is_file()
    assert f"{done} of 3 sessions finished and kept in {out}/progress" in err


def test_a_second_eval_on_the_report_folder_is_refused(tmp_path):
    from rwkvjax.eval.prequential import EvalConfig, run_eval
    from rwkvjax.io.lock import RunLock, RunLocked
    held = RunLock(tmp_path / "out", "eval").acquire()
    try:
        with pytest.raises(RunLocked, match=r"in use by `eval` \(pid \d+"):
            run_eval(EvalConfig(traces=str(tmp_path / "none"), out=str(tmp_path / "out")), model=None)
    finally:
        held.release()
