"""Bridge records, and a pure-Python reader of raw transcript files that produces the same records.

The Node bridge (ingest/bridge/ccsniff_bridge.mjs) prints one JSON record per line:

- `{"k":"block", sid, parent, file, uuid, ts, cwd, msg, type, meta, role, bi, block}`: one content block
  routed by ccsniff; `sid` is `agent-<agentId>` for subagent lines (then `parent` is their sessionId),
  `role` is ccsniff's (user, assistant, tool_result, system, result), `bi` the block's index in its line,
  `block` the transcript's own block object (system lines: `{type, subtype, level, content}`).
- `{"k":"skip", type, file}`: a parsed line that yields no block (snapshots, queue operations, summaries,
  hive-mind meta headers, lifecycle system lines).
- `{"k":"bad", why, file}`: `json` (not JSON; the line is skipped), `utf8` (invalid bytes decoded as
  U+FFFD; the line is still used), `shape` (JSON but not an object), `route` (fields of the wrong type).
- `{"k":"partial", file, bytes}`: unterminated last line (a file being written; not parsed yet).
- `{"k":"gone", file}`: file deleted while tailing. `{"k":"caught_up"}`: history fully read.

`read_records` mirrors ccsniff 1.1.38's routing (src/index.js `_route`) with the bridge's fixes, so
the same files give identical records by either route (tests/ingest/test_ingest_records.py checks this).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ingest.errors import MissingInput

_JS_WS = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_ASSISTANT_ADDED = ("model", "msgId", "stopReason")
MAX_DEPTH = 4  # ccsniff's watcher scans this many folder levels below the projects folder


def js_truthy(v: Any) -> bool:
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0 and not (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str):
        return v != ""
    return True


def js_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return ",".join("" if x is None else js_string(x) for x in v)
    if isinstance(v, dict):
        return "[object Object]"
    return "null"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def project_folder(file: str | None) -> str:
    """The project a transcript belongs to: the nearest folder above it named like Claude Code names project
    folders (the working directory with '/' and other separators turned into '-', so it starts with '-'), else
    the folder it is in. Subagent transcripts below a session's folder land in their session's project."""
    if not file:
        return ""
    parents = Path(file).parents
    for d in parents:
        if d.name.startswith("-"):
            return d.name
    return parents[0].name if parents else ""


def discover(root: Path) -> list[Path]:
    """`*.jsonl` files under `root` down to ccsniff's depth, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        found += [Path(dirpath) / f for f in filenames if f.endswith(".jsonl")]
    return sorted(found)


def expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Explicit .jsonl files and folders (searched like ccsniff does) -> files; missing paths are errors."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += discover(p)
        elif p.is_file():
            files.append(p)
        else:
            raise MissingInput(f"trace source {p} is neither a .jsonl file nor a folder")
    return files


def read_records(files: Iterable[Path]) -> Iterator[dict]:
    """Records for each file in turn (streamed line by line; a line may be any size)."""
    convs: set[str] = set()
    for fp in files:
        yield from _file_records(Path(fp).resolve(), convs)
    yield {"k": "caught_up"}


def _file_records(fp: Path, convs: set[str]) -> Iterator[dict]:
    file = str(fp)
    fallback = fp.name[: -len(".jsonl")] if fp.name.endswith(".jsonl") else fp.name
    try:
        fh = open(fp, "rb")
    except FileNotFoundError:
        yield {"k": "gone", "file": file}
        return
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                text = raw.decode("utf-8", "replace")
                if text.strip(_JS_WS):
                    yield {"k": "partial", "file": file, "bytes": len(text.encode("utf-8", "surrogatepass"))}
                return
            yield from line_records(raw[:-1].decode("utf-8", "replace"), fallback, file, convs)


def line_records(line: str, fallback_sid: str, file: str, convs: set[str]) -> Iterator[dict]:
    """Records of one transcript line (without its newline); `convs` holds the session ids seen so far."""
    raw = line.strip(_JS_WS)
    if not raw:
        return
    try:
        e = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        yield {"k": "bad", "why": "json", "file": file, "bytes": len(raw.encode("utf-8", "surrogatepass"))}
        return
    if "\ufffd" in raw:
        yield {"k": "bad", "why": "utf8", "file": file}
    if not isinstance(e, dict):
        yield {"k": "bad", "why": "shape", "file": file}
        return
    sid = e.get("sessionId") if isinstance(e.get("sessionId"), str) and e.get("sessionId") else fallback_sid
    # Task results in the parent transcript also carry agentId; only sidechain lines belong to the subagent.
    agent = e["agentId"] if e.get("isSidechain") is True and isinstance(e.get("agentId"), str) and e["agentId"] else None
    ctx = {
        "sid": f"agent-{agent}" if agent else sid,
        "parent": sid if agent else None,
        "file": file,
        "uuid": e["uuid"] if isinstance(e.get("uuid"), str) else None,
        "ts": e["timestamp"] if isinstance(e.get("timestamp"), str) else None,
        "cwd": e["cwd"] if isinstance(e.get("cwd"), str) else "",
        "msg": e["message"]["id"] if isinstance(e.get("message"), dict) and isinstance(e["message"].get("id"), str) else None,
        "type": js_string(e["type"]) if "type" in e and e["type"] is not None else "",
        "meta": e.get("isMeta") is True,
    }
    try:
        if sid not in convs and e.get("type") not in ("queue-operation", "last-prompt"):
            if js_truthy(e.get("cwd")) and not isinstance(e["cwd"], str):
                raise TypeError("cwd is not a string")  # ccsniff's _conv takes path.basename(cwd)
            convs.add(sid)
        routed = list(_route(e))
    except TypeError:
        yield {"k": "bad", "why": "route", "file": file}
        return
    if not routed:
        t = e.get("type") if e.get("type") is not None else e.get("_type") if e.get("_type") is not None else "?"
        yield {"k": "skip", "type": js_string(t), "file": file}
        return
    for bi, (role, block) in enumerate(routed):
        yield {"k": "block", **ctx, "role": role, "bi": bi, "block": block}


def _route(e: dict) -> Iterator[tuple[str, Any]]:
    typ = e.get("type")
    if typ in ("queue-operation", "last-prompt"):
        return
    msg = e.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if typ == "user" and js_truthy(e.get("isMeta")):
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "".join(_join_text(b) for b in content if isinstance(b, dict) and b.get("type") == "text")
        else:
            text = ""
        if text.strip(_JS_WS):
            yield "user", {"type": "text", "text": text, "isMeta": True}
        return
    if js_truthy(e.get("isApiErrorMessage")) and e.get("error") == "rate_limit":
        first = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
        text = first.get("text") if isinstance(first.get("text"), str) else "Rate limit hit"
        yield "system", {"type": "system", "subtype": "api_error", "level": "error", "content": text}
        return
    if typ == "system":
        if e.get("subtype") in ("init", "turn_duration", "stop_hook_summary"):
            return
        yield "system", {"type": "system", "subtype": e.get("subtype"), "level": e.get("level"), "content": e.get("content")}
        return
    if typ == "assistant" and js_truthy(content):
        if isinstance(content, list):
            for b in content:
                if isinstance(b, dict) and js_truthy(b.get("type")):
                    yield "assistant", {k: v for k, v in b.items() if k not in _ASSISTANT_ADDED}
        elif not isinstance(content, str):
            raise TypeError("assistant content is neither a list nor a string")
        return
    if typ == "user" and js_truthy(content):
        if isinstance(content, str):
            if content.strip(_JS_WS):
                yield "user", {"type": "text", "text": content}
        elif isinstance(content, list):
            for b in content:
                if not isinstance(b, dict) or not js_truthy(b.get("type")):
                    continue
                yield ("tool_result" if b["type"] == "tool_result" else "user"), b
        return
    if typ == "result":
        block = {"type": "result"}
        for k in ("result", "subtype", "duration_ms", "total_cost_usd"):
            if k in e:
                block[k] = e[k]
        block["is_error"] = e.get("is_error") if js_truthy(e.get("is_error")) else False
        yield "result", block


def _join_text(b: dict) -> str:
    t = b.get("text")
    return "" if t is None else js_string(t)
