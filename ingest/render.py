"""Session events -> training text, with a role label for every character.

Template (RWKV chat convention; blocks joined by a blank line, each block labelled):

    User: <text>
    Assistant: <text>
    Assistant thinking: <thinking text>
    Tool call: <name>
    <key>: <value>            one line per input field; a value containing a newline starts on its own line
                              after `<key>:`; strings verbatim, other values as compact JSON
    Tool result: <name>       (`Tool error: <name>` when is_error)
    <output>                  verbatim, or head + `[... N characters elided ...]` + tail when over the cap
    Meta: <text>              isMeta user lines (only with include_meta)
    System: <subtype>: <text> (only with include_system)
    User: [image <media type>, <N> base64 characters]

Span roles: user, assistant, thinking, tool_input, tool_output, boilerplate (labels, separators, elision
markers, <system-reminder> blocks, meta and system lines, images).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ingest.events import AssistantText, Event, Image, Meta, System, Thinking, ToolResult, ToolUse, UserText, thaw

ROLES = ("user", "assistant", "thinking", "tool_input", "tool_output", "boilerplate")
SEP = "\n\n"
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


@dataclass(frozen=True, slots=True)
class RenderOptions:
    include_thinking: bool = True
    include_meta: bool = False
    include_system: bool = False
    include_subagents: bool = True
    max_tool_output: int = 16384  # characters kept of one tool output; 0 keeps everything

    def wants(self, ev: Event) -> bool:
        if ev.parent is not None and not self.include_subagents:
            return False
        if isinstance(ev, Thinking):
            return self.include_thinking
        if isinstance(ev, Meta):
            return self.include_meta
        if isinstance(ev, System):
            return self.include_system
        return True


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    role: str


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    spans: tuple[Span, ...]

    def by_role(self) -> dict[str, int]:
        """Characters per role."""
        out = dict.fromkeys(ROLES, 0)
        for s in self.spans:
            out[s.role] += s.end - s.start
        return out


class _Builder:
    def __init__(self):
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.n = 0

    def add(self, text: str, role: str):
        if not text:
            return
        if self.spans and self.spans[-1].role == role and self.spans[-1].end == self.n:
            last = self.spans.pop()
            self.spans.append(Span(last.start, self.n + len(text), role))
        else:
            self.spans.append(Span(self.n, self.n + len(text), role))
        self.parts.append(text)
        self.n += len(text)

    def content(self, text: str, role: str):
        """Content text; <system-reminder> blocks inside it are boilerplate."""
        pos = 0
        for m in _REMINDER.finditer(text):
            self.add(text[pos:m.start()], role)
            self.add(m.group(0), "boilerplate")
            pos = m.end()
        self.add(text[pos:], role)


def _input_lines(b: _Builder, inp: Mapping):
    for i, (k, v) in enumerate(thaw(inp).items()):
        if i:
            b.add("\n", "boilerplate")
        val = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        b.add(f"{k}:" + ("\n" if "\n" in val else " "), "boilerplate")
        b.add(val, "tool_input")


def render_session(events: Iterable[Event], opts: RenderOptions = RenderOptions()) -> Rendered:
    """One session's events (in stream order) as training text with role spans."""
    b = _Builder()
    first = True
    for ev in events:
        if not opts.wants(ev):
            continue
        if not first:
            b.add(SEP, "boilerplate")
        first = False
        if isinstance(ev, UserText):
            b.add("User: ", "boilerplate")
            b.content(ev.text, "user")
        elif isinstance(ev, AssistantText):
            b.add("Assistant: ", "boilerplate")
            b.content(ev.text, "assistant")
        elif isinstance(ev, Thinking):
            b.add("Assistant thinking: ", "boilerplate")
            b.content(ev.text, "thinking")
        elif isinstance(ev, ToolUse):
            b.add(f"Tool call: {ev.name}\n", "boilerplate")
            _input_lines(b, ev.input)
        elif isinstance(ev, ToolResult):
            b.add(f"Tool {'error' if ev.is_error else 'result'}: {ev.name}\n", "boilerplate")
            cap, out = opts.max_tool_output, ev.output
            if cap <= 0 or len(out) <= cap:
                b.content(out, "tool_output")
            else:
                head, tail = cap // 2, cap - cap // 2
                b.content(out[:head], "tool_output")
                b.add(f"\n[... {len(out) - head - tail} characters elided ...]\n", "boilerplate")
                b.content(out[len(out) - tail:], "tool_output")
        elif isinstance(ev, Meta):
            b.add("Meta: " + ev.text, "boilerplate")
        elif isinstance(ev, System):
            b.add(f"System: {ev.subtype}: {ev.text}", "boilerplate")
        elif isinstance(ev, Image):
            b.add(f"{'Assistant' if ev.role == 'assistant' else 'User'}: [image {ev.media_type}, {ev.size} base64 characters]",
                  "boilerplate")
        else:
            raise TypeError(f"render_session: no template for event kind {ev.kind}")
    return Rendered("".join(b.parts), tuple(b.spans))


def group_sessions(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Events grouped per session, each session in stream order (sessions by first appearance)."""
    out: dict[str, list[Event]] = {}
    for ev in events:
        out.setdefault(ev.session, []).append(ev)
    return out
