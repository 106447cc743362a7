"""Sessions for evaluation: ingested (redacted), rendered and tokenized, with role and byte counts per token."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from ingest.render import RenderOptions, group_sessions, render_session
from ingest.stream import collect

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
        sessions.append(Session(sid, start, r.text, np.asarray(toks, np.int32), np.asarray(roles, np.int8),
                                np.asarray(nb, np.int32)))
    sessions.sort(key=lambda s: (s.start, s.sid))
    return sessions
