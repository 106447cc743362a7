"""End to end through the real ccsniff bridge: live tailing, a killed child, and cursor restarts, exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections import Counter

from ingest.cursor import Cursor
from ingest.stream import TraceStream, collect
from tests.conftest import CLAUDE_PROJECTS

SID = "11111111-2222-3333-4444-555555555555"


def _line(i: int, kind: str) -> str:
    base = {"uuid": str(uuid.UUID(int=i + 1)), "sessionId": SID, "cwd": "/tmp/live", "isSidechain": False,
            "timestamp": f"2026-11-23T10:{i // 60:02d}:{i % 60:02d}.000Z"}
    if kind == "user":
        return json.dumps({**base, "type": "user", "message": {"role": "user", "content": f"appended question {i}\nline two"}})
    return json.dumps({**base, "type": "assistant", "message": {"id": f"msg_{i}", "role": "assistant", "content": [
        {"type": "text", "text": f"appended answer {i}\n  indented"}]}})


async def _wait(pred, timeout=30.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("timed out waiting for the live stream")
        await asyncio.sleep(0.02)


def test_live_append_kill_and_resume(tmp_path):
    projects = tmp_path / "projects"
    shutil.copytree(CLAUDE_PROJECTS, projects)
    history, _ = asyncio.run(collect("replay", projects=projects))
    new_file = projects / "-tmp-live" / f"{SID}.jsonl"
    new_file.parent.mkdir()
    new_file.write_text("")
    n_new = 60

    async def run():
        got = []
        stream = TraceStream("live", projects=projects, queue_size=8, backoff=(0.05, 0.2))
        async with stream:
            async def consume():
                async for ev in stream:
                    got.append(ev)
            task = asyncio.create_task(consume())
            await _wait(lambda: len(got) >= len(history))
            with open(new_file, "a") as f:
                for i in range(n_new):
                    f.write(_line(i, "user" if i % 2 == 0 else "assistant") + "\n")
                    f.flush()
                    if i == n_new // 3:
                        stream.kill_child()  # dies mid-stream; the supervisor restarts it
                    if i == n_new // 2:
                        (projects / "-Users-yoav-projects-alignment-hive" / "agent-ac1684a.jsonl").unlink()
                    await asyncio.sleep(0.01)
            await _wait(lambda: len(got) >= len(history) + n_new)
            await asyncio.sleep(0.3)  # anything extra (a repeat) would arrive now
            task.cancel()
            metrics, cursor = stream.metrics, stream.cursor.to_json()
        return got, metrics, cursor

    got, metrics, cursor_json = asyncio.run(run())
    assert metrics["child_restarts"] >= 1
    keys = Counter((e.session, e.seq) for e in got)
    assert max(keys.values()) == 1, "an event arrived twice"
    appended = [e for e in got if e.session == SID]
    assert [e.text for e in appended] == [f"appended question {i}\nline two" if i % 2 == 0 else
                                          f"appended answer {i}\n  indented" for i in range(n_new)]
    assert Counter(e.session for e in got if e.session != SID) == Counter(e.session for e in history)

    # A restart from the saved cursor delivers nothing already seen ...
    again, _ = asyncio.run(collect("replay", projects=projects, cursor=Cursor.from_json(cursor_json)))
    assert again == []
    # ... and from a partial cursor, exactly the rest.
    first_half = Cursor()
    for ev in got[: len(got) // 2]:
        first_half.admit(ev)
    rest, _ = asyncio.run(collect("replay", projects=projects, cursor=Cursor.from_json(first_half.to_json())))
    still_there = {(e.session, e.seq) for e in got if e.session != "agent-ac1684a"}
    seen_first = {(e.session, e.seq) for e in got[: len(got) // 2]}
    assert {(e.session, e.seq) for e in rest} == still_there - seen_first


def test_back_pressure_and_clean_shutdown(tmp_path):
    for i in range(4):  # ~9 MB of bridge output: more than the pipe and the reader's buffer hold
        shutil.copytree(CLAUDE_PROJECTS, tmp_path / f"copy{i}")

    async def run():
        stream = TraceStream("replay", projects=tmp_path, queue_size=4)
        async with stream:
            # nobody consumes: the queue fills (waited for, however slowly the bridge starts), then the child
            # blocks on its pipe
            await _wait(lambda: stream._queue.qsize() >= 4)
            assert stream._queue.qsize() == 4
            proc = stream._proc
            assert proc is not None and proc.returncode is None
            first = [await stream.__anext__() for _ in range(10)]
        assert proc.returncode is not None  # leaving the context stopped the child
        return first, stream.cursor

    first, cursor = asyncio.run(run())
    assert [e.seq for e in first if e.session == first[0].session][:3] == [0, 1, 2]
    assert sum(sc.count for sc in cursor.sessions.values()) == 10  # the cursor covers what was consumed only


def test_file_deleted_while_tailing_is_counted(tmp_path):
    projects = tmp_path / "projects"
    shutil.copytree(CLAUDE_PROJECTS, projects)
    victim = projects / "-Users-yoav-projects-alignment-hive" / "agent-a6b700c.jsonl"

    async def run():
        async with TraceStream("live", projects=projects) as stream:
            async def consume():
                async for _ in stream:
                    pass
            task = asyncio.create_task(consume())
            await asyncio.wait_for(stream.caught_up.wait(), 30)
            victim.unlink()
            await _wait(lambda: stream.metrics["file_deleted"] == 1, timeout=10)
            task.cancel()
            return stream.metrics

    m = asyncio.run(run())
    assert m["file_deleted"] == 1 and m["child_restarts"] == 0


def test_character_split_across_appends_stays_intact(tmp_path):
    proj = tmp_path / "projects" / "-tmp"
    proj.mkdir(parents=True)
    f = proj / "s.jsonl"
    f.write_text("")
    line = json.dumps({"type": "user", "uuid": "u1", "sessionId": "s", "message": {"content": "naïve 日本語 ✓"}},
                      ensure_ascii=False).encode()
    cut = line.index("日".encode()) + 1  # inside the 3-byte sequence

    async def run():
        async with TraceStream("live", projects=tmp_path / "projects") as stream:
            await asyncio.wait_for(stream.caught_up.wait(), 30)
            with open(f, "ab") as fh:
                fh.write(line[:cut])
                fh.flush()
                await asyncio.sleep(0.3)  # the bridge reads the first half on its own
                fh.write(line[cut:] + b"\n")
            return await asyncio.wait_for(stream.__anext__(), 10)

    ev = asyncio.run(run())
    assert ev.text == "naïve 日本語 ✓"
