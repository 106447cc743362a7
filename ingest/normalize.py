"""Records -> typed, redacted, de-duplicated events, with counters for everything skipped.

One Normalizer follows one pass over the history (a bridge child or a Python read): `seq` numbers
events per session in that pass, so a fresh pass after a restart numbers them identically and a
Cursor can skip what was already delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, OrderedDict
from typing import Any, Iterator

from ingest.events import AssistantText, Event, Image, Meta, System, Thinking, ToolResult, ToolUse, UserText, freeze
from ingest.redact import Redactor
from ingest.records import project_folder

log = logging.getLogger(__name__)

_DEDUPE_WINDOW = 8192     # recent (session, line/message, block) keys remembered for duplicate detection
_TOOL_NAME_WINDOW = 65536  # recent tool_use ids remembered to name their results


def clean(text: str) -> str:
    """Replace lone surrogates (legal in JSON escapes, not encodable as UTF-8) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _deep_clean(v: Any) -> Any:
    if isinstance(v, str):
        return clean(v)
    if isinstance(v, dict):
        return {clean(k): _deep_clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_clean(x) for x in v]
    return v


class _Lru(OrderedDict):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def put(self, k, v=True):
        self[k] = v
        self.move_to_end(k)
        if len(self) > self.cap:
            self.popitem(last=False)


class Normalizer:
    def __init__(self, redactor: Redactor | None = None):
        self.redact = redactor or Redactor()
        self.counts: Counter = Counter()
        self._seq: Counter = Counter()
        self._last_ts: dict[str, str] = {}
        self._seen = _Lru(_DEDUPE_WINDOW)
        self._tool_names = _Lru(_TOOL_NAME_WINDOW)

    def feed(self, rec: dict) -> Iterator[Event]:
        k = rec.get("k")
        if k == "block":
            ev = self._block(rec)
            if ev is not None:
                yield ev
        elif k == "skip":
            self.counts[f"skipped_line:{rec.get('type')}"] += 1
        elif k == "bad":
            self.counts[f"bad_line:{rec.get('why')}"] += 1
            if rec.get("why") in ("json", "shape", "route"):
                log.warning("skipped a %s-invalid line in %s", rec.get("why"), rec.get("file"))
        elif k == "partial":
            self.counts["partial_last_line"] += 1
        elif k == "gone":
            self.counts["file_deleted"] += 1
        elif k == "caught_up":
            self.counts["caught_up"] += 1
        else:
            self.counts[f"unknown_record:{k}"] += 1

    def _block(self, rec: dict) -> Event | None:
        block = rec.get("block")
        sid = rec.get("sid")
        if not isinstance(block, dict) or not isinstance(sid, str):
            self.counts["bad_record"] += 1
            return None
        fp = hashlib.blake2b(json.dumps(block, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                             digest_size=16).digest()
        anchor = rec.get("msg") if rec.get("role") == "assistant" and rec.get("msg") else rec.get("uuid")
        if anchor is not None:
            key = (sid, anchor, fp)
            if key in self._seen:
                self.counts["duplicate_block"] += 1
                return None
            self._seen.put(key)
        ev = self._typed(rec, _deep_clean(block), sid)
        if ev is None:
            return None
        ts = ev.timestamp
        if ts is not None:
            prev = self._last_ts.get(sid)
            if prev is not None and ts < prev:
                self.counts["timestamp_out_of_order"] += 1
            else:
                self._last_ts[sid] = ts
        self._seq[sid] += 1
        self.counts[f"event:{ev.kind}"] += 1
        return ev

    def _typed(self, rec: dict, b: dict, sid: str) -> Event | None:
        base = dict(session=sid, parent=rec.get("parent"), cwd=rec.get("cwd") or "", uuid=rec.get("uuid"),
                    timestamp=rec.get("ts"), seq=self._seq[sid], project=project_folder(rec.get("file")))
        role, typ, r = rec.get("role"), b.get("type"), self.redact
        msg = rec.get("msg")
        if role == "user" and typ == "text":
            text = _text(b.get("text"))
            if b.get("isMeta") or rec.get("meta"):
                return Meta(**base, text=r(text))
            return UserText(**base, text=r(text))
        if role == "assistant" and typ == "text":
            return AssistantText(**base, text=r(_text(b.get("text"))), message_id=msg)
        if role == "assistant" and typ == "thinking":
            return Thinking(**base, text=r(_text(b.get("thinking"))), message_id=msg)
        if role == "assistant" and typ == "tool_use":
            tid, name = _text(b.get("id")), _text(b.get("name"))
            self._tool_names.put(tid, name)
            inp = b.get("input")
            inp = inp if isinstance(inp, dict) else {"input": inp}
            return ToolUse(**base, tool_use_id=tid, name=name, input=freeze(r.deep(inp)), message_id=msg)
        if role == "tool_result" and typ == "tool_result":
            tid = _text(b.get("tool_use_id"))
            name = self._tool_names.get(tid)
            if name is None:
                self.counts["tool_result_unmatched"] += 1
            return ToolResult(**base, tool_use_id=tid, name=name or "", output=r(tool_output(b.get("content"))),
                              is_error=b.get("is_error") is True)
        if typ == "image":
            src = b.get("source") if isinstance(b.get("source"), dict) else {}
            return Image(**base, role=role or "", media_type=_text(src.get("media_type")),
                         size=len(src.get("data") or "") if isinstance(src.get("data"), str) else 0)
        if role == "system":
            content = b.get("content")
            text = content if isinstance(content, str) else ("" if content is None else
                                                             json.dumps(content, ensure_ascii=False))
            return System(**base, subtype=_text(b.get("subtype")), level=_text(b.get("level")), text=r(text))
        if role == "result":
            return System(**base, subtype="result:" + _text(b.get("subtype")), level="error" if b.get("is_error") else "info",
                          text=r(_text(b.get("result"))))
        self.counts[f"skipped_block:{role}:{typ}"] += 1
        return None


def _text(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def tool_output(content: Any) -> str:
    """A tool_result's content as text: strings as they are, text parts joined by newlines, images marked."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(_text(p.get("text")))
            elif isinstance(p, dict) and p.get("type") == "image":
                src = p.get("source") if isinstance(p.get("source"), dict) else {}
                parts.append(f"[image {_text(src.get('media_type'))}]")
            else:
                parts.append(_text(p))
        return "\n".join(parts)
    return _text(content)
