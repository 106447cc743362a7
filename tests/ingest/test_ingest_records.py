"""The ccsniff bridge and the Python reader give identical records; bad input is counted, never fatal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.normalize import Normalizer
from ingest.records import _JS_WS, line_records, read_records
from ingest.stream import BRIDGE, collect
from tests.conftest import CLAUDE_PROJECTS

SESSION = CLAUDE_PROJECTS / "-Users-yoav-projects-alignment-hive" / "5e41ef2f-689e-4d7d-b917-06ebc40107bc.jsonl"


def _bridge(projects: Path, home: Path) -> list[dict]:
    env = {**os.environ, "HOME": str(home), "CLAUDE_PROJECTS_DIR": str(projects)}
    out = subprocess.run(["node", str(BRIDGE), "--mode", "replay"], env=env, capture_output=True, timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def _by_file(recs):
    d = defaultdict(list)
    for r in recs:
        d[r.get("file")].append(r)
    return d


def _bad_folder(tmp_path: Path) -> Path:
    """A copy of a real session plus every kind of damaged line."""
    proj = tmp_path / "projects" / "-tmp-proj"
    proj.mkdir(parents=True)
    lines = SESSION.read_bytes().splitlines(keepends=True)
    good = [ln for ln in lines if b'"type":"assistant"' in ln]
    dup = good[3]
    huge = json.loads(good[5])
    huge["message"]["content"] = [{"type": "text", "text": "x\n" * (5_500_000)}]  # 11 MB line
    out_of_order = json.loads(good[6])
    out_of_order["timestamp"] = "2000-01-01T00:00:00.000Z"
    missing = json.loads(good[7])
    del missing["message"]["content"]
    wrong = json.loads(good[8])
    wrong["message"]["content"] = {"type": "text"}
    body = (lines[:40] + [b"{not json\n", dup, dup, b'{"type":"user","message":{"content":"caf\xc3\xa9 \xff\xfe ok"}}\n',
                          (json.dumps(huge) + "\n").encode(), (json.dumps(out_of_order) + "\n").encode(),
                          (json.dumps(missing) + "\n").encode(), (json.dumps(wrong) + "\n").encode(), b"[1,2]\n",
                          b"\n", b"   \n"] + lines[40:] + [lines[41][: len(lines[41]) // 2]])
    (proj / "s1.jsonl").write_bytes(b"".join(body))
    return tmp_path / "projects"


def test_bridge_matches_python_reader_on_real_and_damaged_files(tmp_path):
    bad = _bad_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    for root in (CLAUDE_PROJECTS, bad):
        files = sorted(root.rglob("*.jsonl"))
        py = _by_file(read_records(files))
        br = _by_file(_bridge(root, home))
        assert set(py) == set(br)
        for f in py:
            assert py[f] == br[f], f
    assert not (home / ".claude" / "history-backup").exists()  # ccsniff's vault() never ran
    assert list(home.iterdir()) == []


def test_damaged_input_counted_and_valid_events_kept(tmp_path):
    bad = _bad_folder(tmp_path)
    events, m = asyncio.run(collect("replay", projects=bad))
    clean, _ = asyncio.run(collect("replay", paths=[SESSION]))
    assert m["bad_line:json"] == 1 and m["bad_line:utf8"] == 1 and m["bad_line:shape"] == 1
    assert m["bad_line:route"] == 1 and m["partial_last_line"] == 1
    assert m["duplicate_block"] >= 2 and m["timestamp_out_of_order"] >= 1
    texts = [e.text for e in events if e.kind == "UserText"]
    assert any(t.startswith("café \ufffd\ufffd ok") for t in texts)
    assert any(e.kind == "AssistantText" and len(e.text) == 11_000_000 for e in events)
    # every event of the undamaged session is still there, in order (the last line was cut: it is pending)
    def key(e):
        return (e.kind, e.uuid, getattr(e, "text", None), getattr(e, "output", None))
    got = [key(e) for e in events]
    want = [key(e) for e in clean]
    it = iter(got)
    assert all(w in it for w in want[:-1])


def test_folder_and_projects_dir_routes(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAUDE_PROJECTS_DIR", str(CLAUDE_PROJECTS))
    via_env, _ = asyncio.run(collect("replay"))
    via_paths, _ = asyncio.run(collect("replay", paths=[CLAUDE_PROJECTS]))
    assert [e.to_dict() for e in via_env if e.session == SESSION.stem] == \
           [e.to_dict() for e in via_paths if e.session == SESSION.stem]
    with pytest.raises(FileNotFoundError, match="neither a .jsonl file nor a folder"):
        asyncio.run(collect("replay", paths=[tmp_path / "missing.jsonl"]))


_REAL = [ln.decode("utf-8") for ln in SESSION.read_bytes().splitlines()[1:60]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_REAL), st.integers(0, 10_000), st.integers(0, 40), st.text(max_size=20),
       st.sampled_from(["cut", "insert", "swap", "dupe", "retype"]))
def test_fuzz_parser_never_crashes(line, pos, n, junk, op):
    if op == "cut":
        line = line[: pos % (len(line) + 1)]
    elif op == "insert":
        p = pos % (len(line) + 1)
        line = line[:p] + junk + line[p:]
    elif op == "swap":
        line = line.replace('"content"', '"content"' if n % 2 else '"contents"').replace("[", "{", n % 3)
    elif op == "dupe":
        line = line + line
    else:
        d = json.loads(line)
        d["type"] = junk
        d.setdefault("message", {})["content"] = [junk, None, 1, {"type": junk}] if n % 2 else n
        line = json.dumps(d)
    norm = Normalizer()
    recs = list(line_records(line, "fallback", "f.jsonl", set()))
    assert bool(recs) == bool(line.strip(_JS_WS))  # every non-blank line is accounted for
    assert all(r["k"] in ("block", "skip", "bad") for r in recs)
    for r in recs:
        for ev in norm.feed(r):
            json.dumps(ev.to_dict())
            assert ev.session
