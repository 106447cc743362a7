"""Long commands say how far they are and how long is left: off a terminal a line every `--progress-every` seconds
with an ETA, the first at once (the first step compiles, which can take minutes), and each phase of the work named
as it starts (eval: the session and the arm at work).

The subprocess tests wait on the lines themselves (read as they come, each with a deadline), never on a delay."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

DEMO_MODEL = REPO / "rwkvjax" / "data" / "demo_model.safetensors"
DEMO_TRACES = REPO / "rwkvjax" / "data" / "demo_projects"
ETA = re.compile(r"ETA ~?\d+[smh]")


class Lines:
    """A child's stderr, line by line as it is written (a reader thread), for waiting on a line with a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._q = proc, [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, match, timeout: float) -> str:
        """The first new line for which `match(line)` holds; fails when the child ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line within {timeout:.0f} s; seen:\n" + "\n".join(self.seen[-40:]))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)  # (the end stays visible to later waits)
                raise AssertionError(f"the process ended (exit {self.proc.wait()}) first; seen:\n" +
                                     "\n".join(self.seen[-40:]))
            self.seen.append(line)
            if match(line):
                return line

    def rest(self, timeout: float) -> list[str]:
        """Every line until the child ends (within `timeout`)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._q.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                self._q.put(None)
                return out
            self.seen.append(line)
            out.append(line)


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **extra}


def start(argv: list[str], **extra_env) -> tuple[subprocess.Popen, Lines]:
    p = subprocess.Popen([sys.executable, str(REPO / "cli.py"), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env(**extra_env), cwd=REPO)
    return p, Lines(p)


def pretrain_argv(corpus: Path, out: Path, steps: int, *more: str) -> list[str]:
    return ["pretrain", "--out", str(out), "--corpus", str(corpus), "--n-layer", "1", "--n-embd", "64", "--ctx-len",
            "16", "--windows-per-segment", "4", "--batch", "2", "--steps", str(steps), "--eval-every", "100000",
            "--save-every", "4", "--eval-bytes", "256", "--warmup", "2", "--heldout-packages", "corpus/html", *more]


# ----- the reporter -----

def test_a_line_names_the_phase_at_once_and_has_an_eta_after_the_first_steps(monkeypatch):
    import io

    import rwkvjax.train.progress as progress
    now = [100.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    stream = io.StringIO()
    r = progress.Reporter("pretrain", 10, unit="step", every=3600, stream=stream)
    try:
        r.phase("compiling step 1")  # written at once: the first line does not wait for the interval
        assert stream.getvalue() == "pretrain: step 0/10 (0%), elapsed 0s; compiling step 1… (0s)\n"
        now[0] += 50  # the first step compiles
        r.update(1, {"loss": "3.1"})
        assert "ETA ~7m30s" in r.line()  # from the first step alone (compilation included): marked rough
        now[0] += 2  # then 1 s a step
        r.update(3)
        line = r.line()
        assert "step 3/10 (30%)" in line and "1 s/step" in line and "ETA 7s" in line and "loss=3.1" in line
        assert "compiling" not in line  # a finished step ends the phase
    finally:
        r.close()


def test_the_interval_is_a_setting(monkeypatch):
    import rwkvjax.train.progress as progress
    from rwkvjax.errors import ConfigError
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.every_s() == progress.DEFAULT_EVERY_S
    monkeypatch.setenv(progress.ENV, "0.5")
    assert progress.every_s() == 0.5
    monkeypatch.setenv(progress.ENV, "soon")
    with pytest.raises(ConfigError, match="RWKVJAX_PROGRESS_EVERY"):
        progress.every_s()
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), "pretrain", "--out", "x", "--progress-every", "-1"],
                       capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --progress-every -1"), r.stderr


def test_off_a_terminal_lines_come_on_time_while_a_step_is_slow():
    import io

    import rwkvjax.train.progress as progress
    stream = io.StringIO()
    r = progress.Reporter("x", 5, every=0.01, stream=stream)
    try:
        deadline = time.monotonic() + 60
        while stream.getvalue().count("\n") < 3:  # no update at all: the ticker writes them
            assert time.monotonic() < deadline, stream.getvalue()
            time.sleep(0.01)
    finally:
        r.close()
    assert stream.getvalue().startswith("x: step 0/5 (0%), elapsed")


# ----- the commands -----

def test_pretrain_says_it_compiles_then_prints_steps_with_an_eta(corpus, tmp_path):
    p, lines = start(pretrain_argv(corpus, tmp_path / "out", 40, "--progress-every", "0.2"))
    try:
        first = lines.wait_for(lambda x: x.startswith("pretrain: "), 300)
        assert "compiling step 1" in first  # the first line, before the first step's compilation
        lines.wait_for(lambda x: re.match(r"pretrain: step \d+/40 ", x) and ETA.search(x), 300)
        lines.rest(300)
        assert p.wait(timeout=60) == 0, "\n".join(lines.seen[-20:])
    finally:
        p.kill()


def test_eval_reports_each_session_and_arm_with_an_eta(tmp_path):
    import rwkvjax
    from rwkvjax.io.convert import save_official
    from rwkvjax.model.init import init_params
    tiny = rwkvjax.Architecture(256, 32, 1, 64, 16, 16, 16, 16, head_size=16)
    model = save_official(init_params(tiny, 0, live_output=True), tiny, tmp_path / "m.safetensors", dtype="fp32")
    canary = tmp_path / "canary.txt"
    canary.write_text("The quick brown fox jumps over the lazy dog.\n" * 4)
    p, lines = start(["eval", "--traces", str(DEMO_TRACES), "--out", str(tmp_path / "report"), "--model", model,
                      "--arms", "frozen", "tuned", "--ctx-len", "16", "--canaries", str(canary), "--bootstrap", "100",
                      "--progress-every", "0.2"])
    try:
        lines.wait_for(lambda x: x.startswith("eval: "), 300)  # at once: before any session
        lines.wait_for(lambda x: x.startswith("eval: ") and "session 1/3" in x and "arm tuned: training" in x, 300)
        lines.wait_for(lambda x: x.startswith("eval: ") and "session 2/3" in x and ETA.search(x), 300)
        lines.rest(300)
        assert p.wait(timeout=60) == 0, "\n".join(lines.seen[-20:])
    finally:
        p.kill()


def _per_project_run(root: Path) -> Path:
    """A finished `train --state-scope per-project` run of two small projects (what `consolidate` reads)."""
    import chex

    import rwkvjax
    from benchmarks.common.sessions import write_session
    from rwkvjax.train.config import TrainConfig
    from rwkvjax.train.run import Trainer
    import random
    rng = random.Random(0)
    words = ["parse", "config", "value", "retry", "socket", "tensor", "cache", "index", "token", "shard"]
    for i in range(3):
        for project, head in (("alpha", "def alpha():\n"), ("beta", "class Beta:\n")):
            write_session(root / "src" / f"-home-dev-{project}", head + " ".join(rng.choice(words) for _ in range(60)),
                          start=f"2026-01-01T00:00:{2 * i + (project == 'beta'):02d}Z", sid=f"{project[0]}{i}",
                          cwd=f"/home/dev/{project}")
    cfg = TrainConfig(ckpt_dir=str(root / "ck"), source=(str(root / "src"),), model=str(DEMO_MODEL), steps=None,
                      ctx_len=64, replay_per_step=1, save_every=1000, lr=0.1, lr_final=0.01, decay_steps=50,
                      states=str(root / "states"), state_scope="per-project", gate_slice_every=4)
    chex.clear_trace_counter()
    Trainer(cfg, model=rwkvjax.load(DEMO_MODEL)).run(progress=False)
    return root / "ck"


def test_consolidate_reports_its_steps_with_an_eta_and_its_checks(tmp_path):
    ck = _per_project_run(tmp_path)
    p, lines = start(["consolidate", "--ckpt-dir", str(ck), "--steps", "8", "--progress-every", "0.05"])
    try:
        first = lines.wait_for(lambda x: x.startswith("consolidate: "), 300)
        assert "reading the checkpoint" in first
        lines.wait_for(lambda x: re.match(r"consolidate: step [1-8]/8 ", x) and ETA.search(x), 300)
        lines.wait_for(lambda x: x.startswith("consolidate: ") and "held-out slices" in x, 300)
        lines.rest(300)
        assert p.wait(timeout=60) == 0, "\n".join(lines.seen[-20:])
    finally:
        p.kill()


@pytest.mark.parametrize("command", ["train", "hypernet"])
def test_train_and_hypernet_say_they_compile_then_print_steps_with_an_eta(command, tmp_path):
    """The same loop's progress as pretraining's: the line is watched until it has an ETA, then the run is ended."""
    argv = {"train": ["train", "--source", str(DEMO_TRACES), "--model", str(DEMO_MODEL), "--ckpt-dir",
                      str(tmp_path / "ck"), "--steps", "40", "--ctx-len", "16", "--replay-per-step", "1", "--no-gate"],
            "hypernet": ["hypernet", "--traces", str(DEMO_TRACES), "--out", str(tmp_path / "h.safetensors"), "--model",
                         str(DEMO_MODEL), "--ctx-len", "64", "--batch", "2", "--steps", "40", "--speed-steps", "2"]}
    p, lines = start(argv[command] + ["--progress-every", "0.2"])
    try:
        assert "compiling step 1" in lines.wait_for(lambda x: x.startswith(f"{command}: "), 300)
        lines.wait_for(lambda x: re.match(rf"{command}: step \d+/40 ", x) and ETA.search(x), 300)
    finally:
        p.kill()
        p.wait(timeout=60)
