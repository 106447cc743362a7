"""Per-session delivery cursor: restart the stream without dropping or repeating events.

A pass over the history numbers each session's events 0, 1, 2, ... (`Event.seq`, see ingest.normalize).
The cursor keeps, per session, how many events were delivered plus the uuid/timestamp of the last one.
`admit(ev)` is the filter for a new pass: it rejects events already delivered and records new ones.
Save `to_json()` with the trainer's checkpoint and pass `Cursor.from_json(...)` on resume.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ingest.errors import InputError
from ingest.events import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionCursor:
    count: int
    uuid: str | None
    timestamp: str | None


class Cursor:
    VERSION = 1

    def __init__(self, sessions: dict[str, SessionCursor] | None = None):
        self.sessions: dict[str, SessionCursor] = dict(sessions or {})
        self.mismatches = 0

    def admit(self, ev: Event) -> bool:
        """True (and advance) if `ev` was not delivered yet; False for an event at or before the cursor."""
        sc = self.sessions.get(ev.session)
        if sc is not None and ev.seq < sc.count:
            if ev.seq == sc.count - 1 and ev.uuid != sc.uuid:
                # The transcript changed under us (edited or rewritten file): count it, keep going by position.
                self.mismatches += 1
                log.warning("cursor for session %s expected uuid %s at event %d, found %s",
                            ev.session, sc.uuid, ev.seq, ev.uuid)
            return False
        if ev.seq != (sc.count if sc else 0):
            raise ValueError(f"cursor for session {ev.session}: event seq {ev.seq} skips ahead of "
                             f"{sc.count if sc else 0}; events must be admitted in stream order")
        self.sessions[ev.session] = SessionCursor(ev.seq + 1, ev.uuid, ev.timestamp)
        return True

    def delivered(self, session: str) -> int:
        sc = self.sessions.get(session)
        return sc.count if sc else 0

    def copy(self) -> "Cursor":
        return Cursor(self.sessions)

    def to_json(self) -> str:
        return json.dumps({"version": self.VERSION,
                           "sessions": {k: [v.count, v.uuid, v.timestamp] for k, v in sorted(self.sessions.items())}})

    @classmethod
    def from_json(cls, text: str) -> "Cursor":
        try:
            d = json.loads(text)
            if d.get("version") != cls.VERSION:
                raise InputError(f"version {d.get('version')!r}, expected {cls.VERSION}")
            return cls({k: SessionCursor(int(c), u, t) for k, (c, u, t) in d["sessions"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"trace cursor JSON is not valid ({e}); delete it to restart ingestion from scratch") from None
