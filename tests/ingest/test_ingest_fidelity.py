"""Fidelity on real transcripts: everything the raw JSONL holds reaches the rendered text, verbatim and in order."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

import pytest

from ingest.redact import Redactor
from ingest.render import RenderOptions, group_sessions, render_session
from ingest.stream import collect
from tests.conftest import CLAUDE_PROJECTS

FULL = RenderOptions(include_thinking=True, include_meta=True, include_system=True, max_tool_output=0)


def _raw_files():
    files = sorted(CLAUDE_PROJECTS.rglob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no transcripts under {CLAUDE_PROJECTS}: ../shared/data must sit next to the repo")
    return files


def _expected():
    """Independent walk of the raw JSONL: per session, (kind, verbatim fragments) in transcript order."""
    red = Redactor()
    sessions: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    seen = set()
    for fp in _raw_files():
        for line in fp.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            t = d.get("type")
            sid = f"agent-{d['agentId']}" if d.get("isSidechain") and d.get("agentId") else d.get("sessionId")
            if t == "system" and d.get("subtype") not in ("init", "turn_duration", "stop_hook_summary"):
                sessions[sid].append(("System", [red(d["content"])] if isinstance(d.get("content"), str) else []))
            if t not in ("user", "assistant"):
                continue
            content = d["message"]["content"]
            if t == "user" and d.get("isMeta"):
                text = content if isinstance(content, str) else "".join(b["text"] for b in content if b["type"] == "text")
                sessions[sid].append(("Meta", [red(text)]))
                continue
            if isinstance(content, str):
                if content.strip():
                    sessions[sid].append(("UserText", [red(content)]))
                continue
            for b in content:
                key = (sid, d["message"].get("id") if t == "assistant" else None, d["uuid"],
                       json.dumps(b, sort_keys=True))
                dedupe_key = (key[0], key[1] or key[2], key[3])
                if dedupe_key in seen:
                    continue
                seen.add(dedupe_key)
                bt = b["type"]
                if bt == "text":
                    sessions[sid].append(("AssistantText" if t == "assistant" else "UserText", [red(b["text"])]))
                elif bt == "thinking":
                    sessions[sid].append(("Thinking", [red(b["thinking"])]))
                elif bt == "tool_use":
                    inp = red.deep(b["input"])
                    sessions[sid].append(("ToolUse", [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                                                      for v in inp.values()]))
                elif bt == "tool_result":
                    c = b.get("content")
                    out = c if isinstance(c, str) else "\n".join(p["text"] for p in c if p["type"] == "text") if c else ""
                    sessions[sid].append(("ToolResult", [red(out)]))
                elif bt == "image":
                    sessions[sid].append(("Image", []))
                else:
                    raise AssertionError(f"fixture holds block type {bt} this test does not know")
    return sessions


@pytest.fixture(scope="module")
def ccsniff_events():
    events, metrics = asyncio.run(collect("replay", projects=CLAUDE_PROJECTS))
    return events, metrics


def test_counts_match_independent_count(ccsniff_events):
    events, metrics = ccsniff_events
    expected = Counter(kind for items in _expected().values() for kind, _ in items)
    got = Counter(ev.kind for ev in events)
    assert got == expected
    assert sum(expected.values()) > 600  # the fixture is real and large enough to mean something
    for kind in ("UserText", "AssistantText", "Thinking", "ToolUse", "ToolResult", "Meta", "System"):
        assert expected[kind] > 0, kind


def test_unknown_line_types_are_counted_not_fatal(ccsniff_events):
    _, m = ccsniff_events
    raw = Counter()
    for fp in _raw_files():
        for line in fp.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            raw[d.get("type") or d.get("_type")] += 1
    for t in ("file-history-snapshot", "queue-operation", "summary", "hive-mind-meta"):
        assert m[f"skipped_line:{t}"] == raw[t] > 0, t


def test_every_fragment_appears_verbatim_in_order(ccsniff_events):
    events, _ = ccsniff_events
    by_session = group_sessions(events)
    expected = _expected()
    assert set(by_session) == set(expected)
    checked = 0
    for sid, items in expected.items():
        text = render_session(by_session[sid], FULL).text
        pos = 0
        for kind, frags in items:
            for frag in frags:
                at = text.find(frag, pos)
                assert at >= 0, f"session {sid}: {kind} fragment {frag[:80]!r} missing after offset {pos}"
                pos = at + len(frag)
                checked += 1
    assert checked > 800


def test_tool_results_named_from_their_tool_use(ccsniff_events):
    events, m = ccsniff_events
    names = {ev.tool_use_id: ev.name for ev in events if ev.kind == "ToolUse"}
    results = [ev for ev in events if ev.kind == "ToolResult"]
    matched = [r for r in results if r.tool_use_id in names]
    assert len(matched) >= len(results) - m["tool_result_unmatched"] > 0
    assert all(r.name == names[r.tool_use_id] for r in matched)


def test_spans_cover_text_and_label_roles(ccsniff_events):
    events, _ = ccsniff_events
    for sid, evs in group_sessions(events).items():
        r = render_session(evs, RenderOptions())
        assert r.spans[0].start == 0 and r.spans[-1].end == len(r.text)
        assert all(a.end == b.start for a, b in zip(r.spans, r.spans[1:]))
        for s in r.spans:
            if s.role == "user":
                assert not r.text[s.start:s.end].startswith("User: ")
        assert sum(r.by_role().values()) == len(r.text)
