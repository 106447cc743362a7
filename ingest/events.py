"""Typed, immutable trace events: one per transcript content block, already redacted.

Every event carries where it came from (session, parent session for subagents, cwd, line uuid, ISO
timestamp) and `seq`, its 0-based position in its session after de-duplication; cursors use `seq`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping


def freeze(value: Any) -> Any:
    """Read-only copy of a JSON value (dicts -> mapping proxies, lists -> tuples)."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON value from a frozen one."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Event:
    session: str
    parent: str | None
    cwd: str
    uuid: str | None
    timestamp: str | None
    seq: int
    # the Claude Code project folder the transcript lives in (`records.project_folder`); keyword-only so the
    # subclasses' own fields keep their positions
    project: str = dataclasses.field(default="", kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            d[f.name] = thaw(getattr(self, f.name))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class UserText(Event):
    text: str


@dataclass(frozen=True, slots=True)
class AssistantText(Event):
    text: str
    message_id: str | None


@dataclass(frozen=True, slots=True)
class Thinking(Event):
    text: str
    message_id: str | None


@dataclass(frozen=True, slots=True)
class ToolUse(Event):
    tool_use_id: str
    name: str
    input: Mapping[str, Any]
    message_id: str | None


@dataclass(frozen=True, slots=True)
class ToolResult(Event):
    tool_use_id: str
    name: str  # resolved from the matching ToolUse; "" when that tool use was never seen
    output: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class Image(Event):
    role: str
    media_type: str
    size: int  # characters of base64 payload (the payload itself is never kept)


@dataclass(frozen=True, slots=True)
class Meta(Event):
    """User lines that Claude Code marks isMeta (command caveats, injected context)."""
    text: str


@dataclass(frozen=True, slots=True)
class System(Event):
    """System lines (api errors, local commands, compaction) and SDK result rows."""
    subtype: str
    level: str
    text: str


EVENT_TYPES = (UserText, AssistantText, Thinking, ToolUse, ToolResult, Image, Meta, System)
_BY_NAME = {t.__name__: t for t in EVENT_TYPES}


def event_from_dict(d: Mapping[str, Any]) -> Event:
    """Inverse of Event.to_dict."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _BY_NAME:
        raise ValueError(f"event kind {kind!r} is not one of {sorted(_BY_NAME)}")
    if kind == "ToolUse":
        d["input"] = freeze(d["input"])
    return _BY_NAME[kind](**d)
