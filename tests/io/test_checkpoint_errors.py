"""`rwkvjax.io.checkpoint` as a library: importing or saving changes no process-wide logging or hook (the CLI
installs its quieting, `rwkvjax.cli.quiet_orbax_reports`); only the errors a damaged step or a failed save really
raises are reported as such, and a bug in a reader or in the host (a TypeError) propagates."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from rwkvjax.errors import CheckpointError
from rwkvjax.io.checkpoint import SaveFailed, TrainCheckpointer
from tests.conftest import REPO

_PROBE = """
import json, logging, sys
import numpy as np
hook0 = sys.excepthook
from rwkvjax.io.checkpoint import TrainCheckpointer
with TrainCheckpointer(sys.argv[1], async_save=False) as ck:
    ck.save_items(1, {"trainable": {"s": np.zeros(2, np.float32)}}, {"k": 1})
absl = logging.getLogger("absl")
lib = [sys.excepthook is hook0, len(absl.filters), absl.level]
from rwkvjax.cli import main
try:
    main(["-h"])
except SystemExit:
    pass
cli = [sys.excepthook is hook0, len(absl.filters), absl.level]
try:
    main(["-h"])  # twice: installed once
except SystemExit:
    pass
print(json.dumps({"lib": lib, "cli": cli, "again": [len(absl.filters)]}), file=sys.stderr)
"""


def test_the_library_changes_no_hook_or_logger_and_the_cli_does_once(tmp_path):
    r = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "ck")], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stderr.strip().splitlines()[-1])
    assert got["lib"] == [True, 0, logging.NOTSET]
    assert got["cli"] == [False, 1, logging.ERROR]
    assert got["again"] == [1]


def test_the_cli_drops_only_orbaxs_thread_copies_and_the_closed_loop_reports(monkeypatch):
    import rwkvjax.cli as cli
    absl = logging.getLogger("absl")
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append(a[1]))
    monkeypatch.setattr(absl, "filters", [])
    monkeypatch.setattr(absl, "level", absl.level)
    cli.quiet_orbax_reports()
    rec = lambda level, msg: logging.LogRecord("absl", level, __file__, 1, msg, (), None)
    assert not absl.filter(rec(logging.ERROR, "[thread=3] background save thread failed: operation_id=7"))
    assert absl.filter(rec(logging.ERROR, "something else went wrong"))
    assert absl.filter(rec(logging.WARNING, "operation_id=7 is slow"))
    sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
    other = RuntimeError("a real failure")
    sys.excepthook(RuntimeError, other, None)
    assert seen == [other]


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck") / "ck"
    with TrainCheckpointer(d, async_save=False) as ck:
        for s in (1, 2):
            ck.save_items(s, {"trainable": {"s": np.full(4, s, np.float32)}}, {"step": s})
    return d


def _reader_failing_on(step, error):
    def read(s):
        if s == step:
            raise error
        return s
    return read


@pytest.mark.parametrize("error", [ValueError("DATA_LOSS: checksum"), KeyError("Item 'host' was not found"),
                                   FileNotFoundError(2, "No such file or directory"),
                                   json.JSONDecodeError("Expecting value", "", 0)])
def test_what_a_damaged_step_raises_falls_back_to_the_older_step(error, two_steps, caplog):
    ck = TrainCheckpointer(two_steps, read_only=True)
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.checkpoint"):
        assert ck.newest_intact(_reader_failing_on(2, error)) == (1, 1)
    assert [r.getMessage().count("damaged checkpoint step 2") for r in caplog.records] == [1]


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), AttributeError("no attribute 'x'")])
def test_a_bug_in_the_reader_propagates(bug, two_steps, caplog):
    ck = TrainCheckpointer(two_steps, read_only=True)
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.checkpoint"), pytest.raises(type(bug)):
        ck.newest_intact(_reader_failing_on(2, bug), set_aside=True)
    assert not caplog.records
    assert sorted(p.name for p in two_steps.iterdir() if p.name[0].isdigit()) == ["1", "2"]  # nothing set aside


def test_a_truly_damaged_step_still_reads_as_damaged(two_steps, tmp_path, caplog):
    import shutil
    d = tmp_path / "ck"
    shutil.copytree(two_steps, d)

    def tear_host(step):
        for f in (d / str(step) / "host").rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[:5])  # a torn host JSON

    tear_host(2)
    shutil.rmtree(d / "2" / "trainable")  # and a missing item
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.checkpoint"):
        assert TrainCheckpointer(d, read_only=True).restore_host() == {"step": 1}
        assert TrainCheckpointer(d, read_only=True).restore_trainable_arrays()["s"].tolist() == [1.0] * 4
    assert len(caplog.records) == 2
    tear_host(1)  # the older one damaged too: the error names both
    with pytest.raises(CheckpointError, match="every checkpoint step is damaged"):
        TrainCheckpointer(d, read_only=True).restore_host()


def test_a_host_that_is_not_json_is_a_bug_not_a_failed_save(tmp_path):
    with TrainCheckpointer(tmp_path / "ck", async_save=False) as ck:
        with pytest.raises(TypeError, match="not JSON serializable"):
            ck.save_items(1, {"trainable": {"s": np.zeros(2, np.float32)}}, {"bad": object()})


def test_an_os_error_while_saving_is_a_failed_save(tmp_path, monkeypatch):
    ck = TrainCheckpointer(tmp_path / "ck", async_save=False)
    monkeypatch.setattr(ck._mngr, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(SaveFailed, match="saving step 1 failed \\(No space left on device\\); no step is saved"):
        ck.save_items(1, {"trainable": {"s": np.zeros(2, np.float32)}}, {"k": 1})
