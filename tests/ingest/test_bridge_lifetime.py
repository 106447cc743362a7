"""The ccsniff bridge child never outlives its trainer and is not restarted while the trainer stops.

The real `cli.py train --source live --forever` runs in its own process group on a temp copy of one session;
once its bridge is up it gets a terminal-style SIGINT to the whole group, a SIGTERM, or a SIGKILL. Bridges
are found in /proc by their `--dir` (this test's own folder), so an orphan (parent 1) counts too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rwkvjax
from ingest.stream import BRIDGE, TraceStream
from rwkvjax.io.convert import save_official
from rwkvjax.model.init import init_params
from tests.conftest import CLAUDE_PROJECTS, REPO

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)
SESSION = CLAUDE_PROJECTS / "-Users-yoav-projects-alignment-hive" / "agent-a6b700c.jsonl"


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_official(init_params(SMALL, 0, live_output=True), SMALL, path)
    return path


@pytest.fixture
def projects(tmp_path) -> Path:
    d = tmp_path / "projects" / "-tmp-lifetime"
    d.mkdir(parents=True)
    shutil.copy(SESSION, d)
    return d.parent


def _bridges(projects: Path) -> set[int]:
    """Pids of live bridge processes reading `projects`, whoever their parent is now."""
    want = [BRIDGE.name.encode(), str(projects).encode()]
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:  # exited meanwhile
            continue
        if state != b"Z" and all(any(w in a for a in argv) for w in want):
            found.add(int(entry))
    return found


def _wait_for(pred, timeout: float, what: str, watch=None):
    end = time.monotonic() + timeout
    while not pred():
        if watch is not None:
            watch()
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# The trainer stops on SIGINT and SIGTERM after its current step (and saves); the first step compiles for
# ~30 s on a CPU, so those two take longer.
@pytest.mark.parametrize("how", [pytest.param("group-SIGINT", marks=pytest.mark.slow),
                                 pytest.param("SIGTERM", marks=pytest.mark.slow), "SIGKILL"])
def test_bridge_goes_with_the_trainer(how, small_model_file, projects, tmp_path):
    log = tmp_path / "trainer.log"
    argv = [sys.executable, str(REPO / "cli.py"), "train", "--source", "live", "--forever", "--model",
            str(small_model_file), "--ckpt-dir", str(tmp_path / "ckpt"), "--ctx-len", "32",
            "--replay-per-step", "2", "--save-every", "1000", "--lr", "0.1"]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", CLAUDE_PROJECTS_DIR=str(projects))
    with open(log, "wb") as out:
        trainer = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        _wait_for(lambda: _bridges(projects) or trainer.poll() is not None, 120, "the bridge to start")
        assert trainer.poll() is None, log.read_text()[-3000:]
        first = _bridges(projects)
        assert len(first) == 1
        time.sleep(1.0)  # past the history replay: the bridge is tailing
        log_before = len(log.read_bytes())

        if how == "group-SIGINT":  # what a terminal's Ctrl-C does
            os.killpg(trainer.pid, signal.SIGINT)
        else:
            trainer.send_signal(getattr(signal, how))
        seen = set(first)
        _wait_for(lambda: trainer.poll() is not None, 120, "the trainer to exit",
                  watch=lambda: seen.update(_bridges(projects)))
        _wait_for(lambda: not _bridges(projects), 5, "the bridge to exit after its trainer",
                  watch=lambda: seen.update(_bridges(projects)))
        time.sleep(0.5)  # a restarted bridge would show up now
        seen.update(_bridges(projects))

        after = log.read_bytes()[log_before:].decode("utf-8", "replace")
        assert "restart" not in after, after[-3000:]
        assert seen == first, f"a new bridge was started after {how}: {sorted(seen - first)}"
        assert not _bridges(projects)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait(10)
        for pid in _bridges(projects):
            os.kill(pid, signal.SIGKILL)


def test_bridge_stopped_by_a_signal_is_not_restarted(projects):
    """SIGTERM to the bridge itself (a service manager stopping everything) ends the stream; no restart."""
    async def run():
        async with TraceStream("live", projects=projects, backoff=(0.05, 0.1)) as stream:
            got = []

            async def consume():
                async for ev in stream:
                    got.append(ev)
            task = asyncio.create_task(consume())
            await asyncio.wait_for(stream.caught_up.wait(), 30)
            stream._proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(task, 10)  # the stream ends instead of following a new child
            return got, stream.metrics

    got, metrics = asyncio.run(run())
    assert got and metrics["child_restarts"] == 0
    assert not _bridges(projects)
