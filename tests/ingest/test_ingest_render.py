"""Renderer options, elision, spans, event/cursor serialisation."""

from __future__ import annotations

import json

import pytest

from ingest.cursor import Cursor
from ingest.events import AssistantText, Meta, System, Thinking, ToolResult, ToolUse, UserText, event_from_dict, freeze
from ingest.render import RenderOptions, render_session


def _base(seq, session="s1", parent=None):
    return dict(session=session, parent=parent, cwd="/w", uuid=f"u{seq}", timestamp=f"2026-01-01T00:00:{seq:02d}Z",
                seq=seq)


def _session(parent=None, out="line1\nline2"):
    return [
        UserText(**_base(0, parent=parent), text="fix the bug <system-reminder>be nice</system-reminder> please"),
        Thinking(**_base(1, parent=parent), text="I should read it", message_id="m1"),
        ToolUse(**_base(2, parent=parent), tool_use_id="t1", name="Bash",
                input=freeze({"command": "cat a.py\n| head", "timeout": 5}), message_id="m1"),
        ToolResult(**_base(3, parent=parent), tool_use_id="t1", name="Bash", output=out, is_error=True),
        AssistantText(**_base(4, parent=parent), text="Done.\n\n  Fixed.", message_id="m2"),
        Meta(**_base(5, parent=parent), text="<command-name>/clear</command-name>"),
        System(**_base(6, parent=parent), subtype="api_error", level="error", text="ECONNRESET"),
    ]


def test_template_exact():
    r = render_session(_session())
    assert r.text == ("User: fix the bug <system-reminder>be nice</system-reminder> please\n\n"
                      "Assistant thinking: I should read it\n\n"
                      "Tool call: Bash\ncommand:\ncat a.py\n| head\ntimeout: 5\n\n"
                      "Tool error: Bash\nline1\nline2\n\n"
                      "Assistant: Done.\n\n  Fixed.")
    roles = {r.text[s.start:s.end]: s.role for s in r.spans}
    assert roles["<system-reminder>be nice</system-reminder>"] == "boilerplate"
    assert roles["cat a.py\n| head"] == "tool_input" and roles["5"] == "tool_input"
    assert roles["line1\nline2"] == "tool_output" and roles["I should read it"] == "thinking"
    assert roles["Done.\n\n  Fixed."] == "assistant" and roles[" please"] == "user"


def test_options_filter_blocks():
    full = render_session(_session(), RenderOptions(include_meta=True, include_system=True)).text
    assert "Meta: <command-name>/clear</command-name>" in full and "System: api_error: ECONNRESET" in full
    no_think = render_session(_session(), RenderOptions(include_thinking=False)).text
    assert "I should read it" not in no_think and "Assistant: Done." in no_think
    assert render_session(_session(parent="p"), RenderOptions(include_subagents=False)).text == ""
    assert render_session(_session(parent="p")).text.startswith("User: fix")


def test_tool_output_cap_marks_elision():
    out = "".join(f"{i:05d}\n" for i in range(10_000))
    r = render_session(_session(out=out), RenderOptions(max_tool_output=1000))
    assert f"[... {len(out) - 1000} characters elided ...]" in r.text
    assert out[:500] in r.text and out[-500:] in r.text and out[:501] not in r.text
    assert sum(s.end - s.start for s in r.spans if s.role == "tool_output") == 1000
    assert render_session(_session(out=out), RenderOptions(max_tool_output=0)).text.count(out) == 1


def test_events_roundtrip_and_are_frozen():
    for ev in _session():
        assert event_from_dict(json.loads(ev.to_json())) == ev
        with pytest.raises(AttributeError):
            ev.seq = 9
    with pytest.raises(TypeError):
        _session()[2].input["command"] = "rm -rf /"


def test_cursor_filters_delivered_and_roundtrips():
    evs = _session()
    c = Cursor()
    assert [c.admit(e) for e in evs[:3]] == [True, True, True]
    c2 = Cursor.from_json(c.to_json())
    assert [c2.admit(e) for e in evs] == [False] * 3 + [True] * 4
    assert c2.delivered("s1") == 7 and c2.mismatches == 0
    moved = Cursor.from_json(c.to_json())
    changed = ToolUse(**{**_base(2), "uuid": "other"}, tool_use_id="t1", name="Bash", input=freeze({}), message_id=None)
    assert moved.admit(changed) is False and moved.mismatches == 1
    with pytest.raises(ValueError, match="skips ahead"):
        Cursor().admit(evs[3])
    with pytest.raises(ValueError, match="delete it to restart"):
        Cursor.from_json('{"version": 7}')
