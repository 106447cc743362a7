"""Follow a growing metrics.jsonl: each poll reads only the bytes appended since the last one.

The trainer appends one JSON line per logged step and flushes it; a reader may catch a line half
written, so only newline-terminated lines are parsed and the rest waits for the next poll. A line that
ends but does not parse (a writer killed mid-line, then a resumed run appending after it) is counted as
unreadable; the resumed run's record glued to its end (it starts with `{"step"`) is still read. A resumed
run re-logs the steps after its last checkpoint: as `eval.inspect.read_metrics` does, the newest record of
a step wins, so the rows from that step on are dropped and `version` changes.

Rows keep the scalar fields (a dict of scalars, e.g. `gate_counts` or `memory`, becomes `gate_counts/<key>`);
list fields (replay histogram, top merges) are kept for the newest step only; gate decisions other than
"accepted", screened windows, windows the session memory's flood screen skipped and steps whose learning by the
memory the gate undid become events, and so do the steps that backed the learning rate off; `stalled` says in
words when the newest record found the last updates all rolled back.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import threading
import time
from pathlib import Path

MAX_POINTS = 4000   # a first load sends at most about this many rows (every k-th, the newest always)
MAX_EVENTS = 200    # gate events sent, newest


def finite(x):
    """The value with NaN and infinities as None (the trainer's json writes NaN, which browsers reject)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def _scalar(v) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def split_record(rec: dict) -> tuple[dict, dict, list[dict]]:
    """(scalar row, list/dict fields kept for the newest step, gate events) of one metrics record."""
    row, bulky = {}, {}
    for k, v in finite(rec).items():
        if _scalar(v):
            row[k] = v
        elif isinstance(v, dict) and all(_scalar(x) for x in v.values()):
            row.update({f"{k}/{sub}": x for sub, x in v.items()})
        elif k not in ("screened", "memory_screened", "live_sessions"):
            bulky[k] = v
    step, sessions = row["step"], ",".join(rec.get("live_sessions") or [])
    events = [{"step": step, "decision": "screened", "reason": w.get("reason"), "session": w.get("session")}
              for w in rec.get("screened") or []]
    events += [{"step": step, "decision": "memory screened", "reason": w.get("reason"), "session": w.get("session")}
               for w in rec.get("memory_screened") or []]
    if rec.get("memory_gate") == "rolled_back":
        events.append({"step": step, "decision": "memory learning undone", "reason": rec.get("memory_gate_reason"),
                       "session": sessions})
    if rec.get("lr_backoff"):
        events.append({"step": step, "decision": "learning rate backed off", "reason": rec["lr_backoff"],
                       "session": sessions})
    if rec.get("gate") in ("rolled_back", "quarantined"):
        events.append({"step": step, "decision": rec["gate"], "reason": rec.get("gate_reason"), "session": sessions})
    elif rec.get("rolled_back") and rec.get("gate") is None:  # a veto by another hook
        events.append({"step": step, "decision": "rolled_back", "reason": rec["rolled_back"], "session": sessions})
    return row, bulky, events


def stalled(row: dict) -> str | None:
    """The words the page shows when the newest record says the last updates were all rolled back (the trainer's
    `stalled`, `train.run_state.LrBackoff`); None while the run learns."""
    if not row.get("stalled"):
        return None
    lr = row.get("lr")
    return (f"stalled: the last {row.get('rollback_streak')} updates were all rolled back by the update gate"
            + ("" if lr is None else f" (learning rate now {lr:.4g})") + "; lower --lr or raise --gate-canary-rel")


def _record(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
        int(rec["step"])
    except (ValueError, KeyError, TypeError):
        return None
    return rec


class MetricsTail:
    """The records of one metrics.jsonl, in step order, refreshed by `poll()` (thread-safe)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock = threading.Lock()
        # changes when rows already handed out are replaced; starts from the clock so that a page still open
        # from an earlier server (which may have read another file) reloads
        self.version = int(time.time() * 1000)
        self._restart(None)

    def _restart(self, ident) -> None:
        self.rows: list[dict] = []
        self.steps: list[int] = []          # the rows' steps, for bisect
        self.events: list[dict] = []
        self.latest: dict[str, dict] = {}   # list/dict field -> {"step", "value"} of the newest record holding it
        self.unreadable = 0                 # complete lines that were not a JSON record
        self.version += 1
        self._offset, self._partial, self._file = 0, b"", ident

    def poll(self) -> None:
        """Read what was appended (from the start again when the file was replaced or truncated)."""
        with self.lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return
            ident = (st.st_dev, st.st_ino)
            if ident != self._file or st.st_size < self._offset:
                self._restart(ident)
            if st.st_size == self._offset:
                return
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read(st.st_size - self._offset)
            self._offset += len(data)
            done, _, self._partial = (self._partial + data).rpartition(b"\n")
            for line in done.split(b"\n") if done else ():
                self._add(line)

    def _add(self, line: bytes) -> None:
        if not line.strip():
            return
        rec = _record(line)
        if rec is None:
            self.unreadable += 1
            glued = line.rfind(b'{"step"')
            rec = _record(line[glued:]) if glued > 0 else None
            if rec is None:
                return
        step = int(rec["step"])
        if self.steps and step <= self.steps[-1]:  # re-logged after a resume: the newest record wins
            i = bisect.bisect_left(self.steps, step)
            del self.rows[i:], self.steps[i:]
            self.events = [e for e in self.events if e["step"] < step]
            self.latest = {k: v for k, v in self.latest.items() if v["step"] < step}
            self.version += 1
        row, bulky, events = split_record(rec)
        self.rows.append(row)
        self.steps.append(step)
        self.events.extend(events)
        self.latest.update({k: {"step": step, "value": v} for k, v in bulky.items()})

    def since(self, version: int, start: int) -> dict:
        """What a client holding `start` rows of `version` lacks; everything (thinned to about MAX_POINTS rows,
        the newest always among them) when it holds none or the version changed."""
        with self.lock:
            rows, stride = self.rows, 1
            if version != self.version or start > len(rows):
                start = 0
            if start == 0 and len(rows) > MAX_POINTS:
                stride = -(-len(rows) // MAX_POINTS)
                rows = rows[::-1][::stride][::-1]  # counted from the newest, so it is kept
            else:
                rows = rows[start:]
            return {"version": self.version, "next": len(self.rows), "rows": rows, "stride": stride,
                    "stalled": stalled(self.rows[-1]) if self.rows else None,
                    "events": self.events[-MAX_EVENTS:], "events_total": len(self.events), "latest": self.latest,
                    "unreadable": self.unreadable, "pending_bytes": len(self._partial),
                    "exists": self._file is not None}
