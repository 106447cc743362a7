"""Sessions for evaluation: ingested (redacted), rendered and tokenized, with role and byte counts per token,
and the split by time (later sessions held out; a subagent transcript goes with its parent session)."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np

from ingest.render import RenderOptions, group_sessions, render_session
from ingest.stream import collect
from rwkvjax.errors import DataError

ROLES = ("user", "assistant", "thinking", "tool_input", "tool_output", "boilerplate")


@dataclasses.dataclass
class Session:
    sid: str
    start: str
    text: str
    tokens: np.ndarray      # base tokens of the rendered text
    roles: np.ndarray       # role index per token
    nbytes: np.ndarray      # UTF-8 bytes per token
    heldout: bool = False
    parent: str | None = None  # the session a subagent transcript belongs to
    group: str = ""         # the parent session's id for a subagent whose parent is present, else its own


def load_sessions(traces: str, tok, opts: RenderOptions = RenderOptions()) -> list[Session]:
    """Ingest (redacted), render and tokenize every session; ordered by its first timestamp."""
    events, _ = asyncio.run(collect("replay", paths=[traces], reader="python"))
    sessions = []
    for sid, evs in group_sessions(events).items():
        r = render_session(evs, opts)
        if not r.text:
            continue
        toks, roles, nb = [], [], []
        for span in r.spans:
            ids = tok.encode(r.text[span.start:span.end])
            toks.extend(ids)
            roles.extend([ROLES.index(span.role)] * len(ids))
            nb.extend(len(tok.decode_bytes([i])) for i in ids)
        start = min((e.timestamp for e in evs if e.timestamp), default="")
        parent = next((e.parent for e in evs if e.parent), None)
        sessions.append(Session(sid, start, r.text, np.asarray(toks, np.int32), np.asarray(roles, np.int8),
                                np.asarray(nb, np.int32), parent=parent))
    sids = {s.sid for s in sessions}
    for s in sessions:
        s.group = s.parent if s.parent in sids else s.sid
    sessions.sort(key=lambda s: (s.start, s.sid))
    return sessions


def split_by_time(sessions: list[Session], heldout_fraction: float) -> list[Session]:
    """Mark the latest groups (a session with its subagents) held out: ceil(fraction x groups) of them, at
    least one, and at least one group left for training. Returns the sessions in time order."""
    first: dict[str, str] = {}
    for s in sessions:
        first[s.group] = min(first.get(s.group, s.start), s.start)
    order = sorted(first, key=lambda g: (first[g], g))
    if len(order) < 2:
        raise DataError(f"{len(sessions)} session(s) in {len(order)} group(s); a split by time needs at least 2 "
                        "sessions that are not subagents of one another")
    n_held = min(max(1, math.ceil(heldout_fraction * len(order))), len(order) - 1)
    held = set(order[-n_held:])
    for s in sessions:
        s.heldout = s.group in held
    return sessions
