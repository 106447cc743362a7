"""Bad transcript lines: one summary WARNING per file (counts per kind, the first bad line), and per-file
figures that tell a caller when a file (0-byte, binary, not a transcript) gave no session at all."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path

import pytest

from ingest.normalize import Normalizer
from ingest.records import line_records, read_records
from ingest.stream import collect
from tests.conftest import CLAUDE_PROJECTS

SESSION = CLAUDE_PROJECTS / "-Users-yoav-projects-alignment-hive" / "5e41ef2f-689e-4d7d-b917-06ebc40107bc.jsonl"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "ingest.normalize"]


def _feed(norm: Normalizer, records) -> list:
    return [ev for rec in records for ev in norm.feed(rec)]


def _folder(tmp_path: Path) -> Path:
    """A project folder with a real session, a 20 KB binary file, a 0-byte file and a JSONL file of
    objects that are not transcript lines."""
    proj = tmp_path / "projects" / "-tmp-proj"
    proj.mkdir(parents=True)
    (proj / "real.jsonl").write_bytes(SESSION.read_bytes())
    (proj / "binary.jsonl").write_bytes(random.Random(7).randbytes(20_000) + b"\n")
    (proj / "empty.jsonl").write_bytes(b"")
    (proj / "other.jsonl").write_text("".join(json.dumps({"id": i, "name": f"row {i}"}) + "\n" for i in range(5)))
    return tmp_path / "projects"


def test_binary_file_gives_one_summary_not_one_warning_per_line(tmp_path, caplog):
    root = _folder(tmp_path)
    binary = root / "-tmp-proj" / "binary.jsonl"
    n_lines = len([ln for ln in binary.read_bytes().split(b"\n") if ln.strip()])
    caplog.set_level(logging.WARNING)
    norm = Normalizer()
    events = _feed(norm, read_records([binary]))
    assert events == [] and norm.counts["bad_line:json"] >= 50
    msgs = _warnings(caplog)
    assert len(msgs) == 1, msgs
    assert str(binary.resolve()) in msgs[0] and "not JSON, skipped" in msgs[0]
    assert f"{norm.counts['bad_line:json']} bad lines" in msgs[0] and "the first at line 1" in msgs[0]
    assert "no events from this file" in msgs[0]
    fs = norm.files[str(binary.resolve())]
    assert fs.events == 0 and fs.sessions == set() and fs.first_bad_line == 1
    assert fs.lines == n_lines == sum(fs.bad.values())


@pytest.mark.parametrize("reader", ["python", "ccsniff"])
def test_no_session_files_and_one_warning_per_bad_file(tmp_path, caplog, reader):
    root = _folder(tmp_path)
    caplog.set_level(logging.WARNING)
    kw = {"paths": [root], "reader": "python"} if reader == "python" else {"projects": root}
    events, metrics = asyncio.run(collect("replay", **kw))
    assert events and metrics["sessions"] >= 1
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "binary.jsonl" in msgs[0], msgs  # the only file with bad lines
    files = sorted((root / "-tmp-proj").glob("*.jsonl"))
    # the figures a caller such as `train` needs: which of its files gave no session at all
    async def figures():
        from ingest.stream import TraceStream
        async with TraceStream("replay", **kw) as s:
            async for _ in s:
                pass
            return s.normalizer
    norm = asyncio.run(figures())
    assert sorted(Path(p).name for p in norm.no_session_files(files)) == ["binary.jsonl", "empty.jsonl", "other.jsonl"]
    other = next(fs for f, fs in norm.files.items() if f.endswith("other.jsonl"))
    assert other.lines == 5 and other.events == 0 and not other.bad
    assert norm.counts["skipped_line:?"] == 5


def test_alone_a_bad_file_has_no_sessions(tmp_path):
    root = _folder(tmp_path)
    events, metrics = asyncio.run(collect("replay", paths=[root / "-tmp-proj" / "real.jsonl"], reader="python"))
    assert metrics["sessions"] == len({ev.session for ev in events}) >= 1
    for name in ("binary.jsonl", "empty.jsonl", "other.jsonl"):
        events, metrics = asyncio.run(collect("replay", paths=[root / "-tmp-proj" / name], reader="python"))
        assert events == [] and metrics["sessions"] == 0, name


def test_first_bad_line_number_and_kinds(tmp_path, caplog):
    """Bad lines of every kind at known line numbers in a real session; blank lines are not counted."""
    good = SESSION.read_bytes().splitlines(keepends=True)[:12]
    utf8 = b'{"type":"user","message":{"content":"caf\xc3\xa9 \xff ok"}}\n'
    body = good[:4] + [b"{not json\n"] + good[4:7] + [b"[1,2]\n", utf8]
    body += good[7:] + [b"also not json\n"]
    f = tmp_path / "-p" / "s.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(body))
    caplog.set_level(logging.WARNING)
    norm = Normalizer()
    _feed(norm, read_records([f]))
    fs = norm.files[str(f.resolve())]
    assert fs.first_bad_line == 5 and fs.lines == len(body)
    assert fs.bad == {"json": 2, "shape": 1, "utf8": 1}
    msgs = _warnings(caplog)
    assert len(msgs) == 1
    assert "4 bad lines" in msgs[0] and "2 not JSON" in msgs[0] and "1 not an object" in msgs[0]
    assert "1 undecodable bytes" in msgs[0] and "the first at line 5" in msgs[0]
    assert "no events" not in msgs[0] and fs.events > 0


def test_live_appends_report_each_run_of_bad_lines_once(caplog):
    """After the history is caught up, a run of bad lines is reported when the file's next good line comes,
    or on flush_warnings(); nothing is reported twice."""
    caplog.set_level(logging.WARNING)
    lines = SESSION.read_text().splitlines()
    norm, convs, file = Normalizer(), set(), "/x/-p/live.jsonl"

    def feed(line):
        return _feed(norm, line_records(line, "live", file, convs))
    for ln in lines[:3]:
        feed(ln)
    list(norm.feed({"k": "caught_up"}))
    assert _warnings(caplog) == []
    for _ in range(30):
        feed("\x00\x01 garbage")
    assert _warnings(caplog) == []          # the run is still going
    feed(lines[3])
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "30 bad lines" in msgs[0] and "the first at line 4" in msgs[0]
    feed("more garbage")
    norm.flush_warnings()
    norm.flush_warnings()
    msgs = _warnings(caplog)
    assert len(msgs) == 2 and "1 bad line (" in msgs[1] and "the first at line 35" in msgs[1]
