"""Records -> typed, redacted, de-duplicated events, with counters for everything skipped.

One Normalizer follows one pass over the history (a bridge child or a Python read): `seq` numbers
events per session in that pass, so a fresh pass after a restart numbers them identically and a
Cursor can skip what was already delivered.

Bad lines (not JSON, not an object, fields of the wrong type, undecodable bytes) are counted, never
fatal, and reported as one WARNING per file with counts per kind and the first bad line's number: while
the history is read, once it is caught up; after that (live appends), when a run of bad lines ends (the
file's next good line, a record of another file) or on `flush_warnings()`. Line numbers count the
file's non-blank lines (records carry no line numbers; a line's records are told apart by their block
index), which are its line numbers unless it has blank lines.

`files` holds per-file figures (`FileStats`: lines, events, sessions, bad lines by kind) and
`counts["sessions"]` the sessions that gave at least one event, so a caller can tell a transcript from a
0-byte, binary or non-transcript file: `no_session_files(paths)` lists the paths that gave no event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ingest.events import AssistantText, Event, Image, Meta, System, Thinking, ToolResult, ToolUse, UserText, freeze
from ingest.records import project_folder
from ingest.redact import Redactor, prints_secret

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


_BAD_WORDS = {"json": "not JSON, skipped", "shape": "not an object, skipped",
              "route": "fields of the wrong type, skipped", "utf8": "undecodable bytes, kept as U+FFFD"}


@dataclass
class FileStats:
    """What one transcript file gave in this pass."""

    lines: int = 0                 # non-blank lines read (complete lines only)
    events: int = 0                # events produced (after de-duplication)
    sessions: set = field(default_factory=set)  # session ids with at least one event
    bad: Counter = field(default_factory=Counter)  # bad lines by kind (json, shape, route, utf8)
    first_bad_line: int | None = None
    partial_bytes: int = 0         # an unterminated last line, not read yet
    _pending: Counter = field(default_factory=Counter, repr=False)  # bad lines not reported yet
    _pending_first: int | None = field(default=None, repr=False)
    _after_utf8: bool = field(default=False, repr=False)


class Normalizer:
    def __init__(self, redactor: Redactor | None = None):
        self.redact = redactor or Redactor()
        self.counts: Counter = Counter()
        self.files: dict[str, FileStats] = {}
        self._seq: Counter = Counter()
        self._last_ts: dict[str, str] = {}
        self._seen = _Lru(_DEDUPE_WINDOW)
        self._tool_names = _Lru(_TOOL_NAME_WINDOW)
        # Bash tool uses whose whole output is a secret's value (`terraform output -raw DB_PASSWORD`, `printenv
        # API_TOKEN`): their result is a separate block that the redactor sees alone, with nothing in it naming the
        # secret, so the command decides (Redactor.printed_secret). Only such ids are kept.
        self._printing = _Lru(_TOOL_NAME_WINDOW)
        self._sessions: set[str] = set()
        self._caught_up = False
        self._last_file: str | None = None

    def feed(self, rec: dict) -> Iterator[Event]:
        k = rec.get("k")
        fs = self._file(rec)
        if fs is not None:
            self._count_line(rec, fs)
        if k == "block":
            ev = self._block(rec)
            if ev is not None:
                if fs is not None:
                    fs.events += 1
                    fs.sessions.add(ev.session)
                if ev.session not in self._sessions:
                    self._sessions.add(ev.session)
                    self.counts["sessions"] += 1
                yield ev
        elif k == "skip":
            self.counts[f"skipped_line:{rec.get('type')}"] += 1
        elif k == "bad":
            self.counts[f"bad_line:{rec.get('why')}"] += 1
        elif k == "partial":
            self.counts["partial_last_line"] += 1
            if fs is not None:
                fs.partial_bytes = rec.get("bytes") or 0
        elif k == "gone":
            self.counts["file_deleted"] += 1
        elif k == "caught_up":
            self.counts["caught_up"] += 1
            self._caught_up = True
            self.flush_warnings()
        else:
            self.counts[f"unknown_record:{k}"] += 1

    # per-file figures and the bad-line summary ------------------------------------------------------------
    def _file(self, rec: dict) -> FileStats | None:
        file = rec.get("file")
        if not isinstance(file, str):
            return None
        if self._caught_up and self._last_file is not None and file != self._last_file:
            self.flush_warnings(exclude=file)  # live: another file's run of bad lines has ended
        self._last_file = file
        fs = self.files.get(file)
        if fs is None:
            fs = self.files[file] = FileStats()
        return fs

    def _count_line(self, rec: dict, fs: FileStats) -> None:
        """Count lines from record boundaries: a line gives one `bad` json record, or an optional `bad` utf8
        record followed by a `bad` shape/route record, a `skip` record or blocks numbered from 0."""
        k, why = rec.get("k"), rec.get("why")
        if k == "bad" and why in ("json", "utf8"):
            fs.lines += 1
        elif (k == "bad" and why in ("shape", "route")) or k == "skip" or (k == "block" and rec.get("bi") == 0):
            if not fs._after_utf8:
                fs.lines += 1
        elif k != "block":
            return
        fs._after_utf8 = k == "bad" and why == "utf8"
        if k == "bad":
            fs.bad[why] += 1
            fs._pending[why] += 1
            if fs.first_bad_line is None:
                fs.first_bad_line = fs.lines
            if fs._pending_first is None:
                fs._pending_first = fs.lines
        elif self._caught_up and fs._pending and not fs._after_utf8:
            self._report(rec["file"], fs)  # live: the file's run of bad lines ended with a good line

    def flush_warnings(self, exclude: str | None = None) -> None:
        """Log the summary of every file's bad lines not reported yet (one WARNING per file)."""
        for file, fs in self.files.items():
            if fs._pending and file != exclude:
                self._report(file, fs)

    def _report(self, file: str, fs: FileStats) -> None:
        kinds = "; ".join(f"{n} {_BAD_WORDS.get(w, w)}" for w, n in fs._pending.most_common())
        total = sum(fs._pending.values())
        log.warning("%s: %d bad line%s (%s), the first at line %d%s", file, total, "" if total == 1 else "s", kinds,
                    fs._pending_first, "; no events from this file so far" if not fs.events else "")
        fs._pending.clear()
        fs._pending_first = None

    def no_session_files(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Those of `paths` (transcript files) that gave no event in this pass: empty, binary, not
        transcripts, or not read at all."""
        got = {os.path.realpath(f) for f, fs in self.files.items() if fs.events}
        return [str(p) for p in paths if os.path.realpath(p) not in got]

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
            if isinstance(inp.get("command"), str) and prints_secret(inp["command"]):
                self._printing.put(tid, inp["command"])
            return ToolUse(**base, tool_use_id=tid, name=name, input=freeze(r.deep(inp)), message_id=msg)
        if role == "tool_result" and typ == "tool_result":
            tid = _text(b.get("tool_use_id"))
            name = self._tool_names.get(tid)
            if name is None:
                self.counts["tool_result_unmatched"] += 1
            command = self._printing.get(tid)
            out = tool_output(b.get("content"))
            return ToolResult(**base, tool_use_id=tid, name=name or "",
                              output=r(out) if command is None else r.printed_secret(command, out),
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
