"""Session events -> rendered text -> base tokens -> (optionally merged) fixed-length training windows -> batches.

Each session keeps a buffer of base tokens. A window takes the next tokens of one session, encodes
them as one dynamic-tokenizer segment (its end-of-segment slot table reads every unit of the window;
with the table at the segment's start and the install indices it gives the table in force at every
unit) and holds exactly `ctx_len` units, except at the end of a stream. Tokens still waiting in a
buffer are part of the saved state, so a restart neither drops nor repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from ingest.events import Event
from ingest.render import ROLES, SEP, RenderOptions, Span, render_session
from rwkvjax.merges.hypernet import SlotTables, UnitPositions
from rwkvjax.merges.units import SlotBatch
from rwkvjax.train.objective import Batch


@dataclasses.dataclass(frozen=True)
class Window:
    session: str
    units: np.ndarray          # [n <= ctx_len] int32 unit ids
    nbytes: int                # UTF-8 bytes of the text the units cover
    n_base: int                # base tokens the units cover
    slots: np.ndarray | None = None       # [S,2] slot table that reads the units (merges on)
    avail_from: np.ndarray | None = None  # [S] first unit index at which each slot holds its `slots` pair
    prior_slots: np.ndarray | None = None  # [S,2] slot table when the window's segment began
    project: str | None = None  # Claude Code project folder of its session (per-project states)
    # role of each unit (index into ingest.render.ROLES, -1 unknown) and UTF-8 bytes per role, for the
    # per-role bits/byte of live windows; not saved (a window restored from a checkpoint has none)
    roles: np.ndarray | None = None
    role_bytes: np.ndarray | None = None

    def __post_init__(self):
        parts = (self.slots is None, self.avail_from is None, self.prior_slots is None)
        if len(set(parts)) != 1:
            raise ValueError(f"window of session {self.session}: slots, avail_from and prior_slots come together "
                             f"(got slots={'no' if parts[0] else 'yes'}, avail_from={'no' if parts[1] else 'yes'}, "
                             f"prior_slots={'no' if parts[2] else 'yes'})")

    def to_dict(self) -> dict:
        d = {"session": self.session, "units": self.units.tolist(), "nbytes": self.nbytes, "n_base": self.n_base}
        if self.slots is not None:
            d.update(slots=self.slots.tolist(), avail_from=self.avail_from.tolist(),
                     prior_slots=self.prior_slots.tolist())
        if self.project is not None:
            d["project"] = self.project
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Window":
        arr = lambda k: None if d.get(k) is None else np.asarray(d[k], np.int32)
        return cls(d["session"], np.asarray(d["units"], np.int32), int(d["nbytes"]), int(d["n_base"]),
                   arr("slots"), arr("avail_from"), arr("prior_slots"), d.get("project"))


ROLE_CHARS = "x" + "".join(str(i) for i in range(len(ROLES)))  # a role index r is saved as ROLE_CHARS[r + 1]


def base_per_window(ctx_len: int, dyntok) -> int:
    """Base tokens that always fill a window of ctx_len units (a unit covers at most two)."""
    return ctx_len if dyntok is None else 2 * ctx_len


def cut_window(sid: str, buf: list[int], ctx_len: int, tok, dyntok, roles: list[int] | None = None) -> Window:
    """Cut one window of at most ctx_len units from the front of `buf` (which loses the tokens it covers).

    With merges, the tokenizer encodes until the window holds ctx_len units, so a window is full
    whenever `buf` holds base_per_window() tokens, and the tokenizer never has to undo a segment.
    `roles`: the role of each token of `buf` (it loses the same ones); the window then carries its roles.
    """
    if dyntok is None:
        units, enc, n = np.asarray(buf[:ctx_len], np.int32), None, min(len(buf), ctx_len)
    else:
        enc = dyntok.encode(buf[:base_per_window(ctx_len, dyntok)], max_units=ctx_len)
        units, n = enc.units, enc.n_base
    nbytes = len(tok.decode_bytes(buf[:n]))
    extra = {} if roles is None else unit_roles(units, buf[:n], roles[:n], tok, enc)
    del buf[:n]
    if roles is not None:
        del roles[:n]
    tables = (None, None, None) if enc is None else (enc.slots, enc.avail_from, enc.prior)
    return Window(sid, np.asarray(units, np.int32), nbytes, n, *tables, **extra)


def token_roles(tok, text: str, spans: Sequence[Span], ids: Sequence[int]) -> list[int]:
    """Role index of each token of `text` (encoded as `ids`): the role of the span holding its first byte."""
    ends, kinds, pos = [], [], 0
    for sp in spans:
        pos += len(text[sp.start:sp.end].encode("utf-8"))
        ends.append(pos)
        kinds.append(ROLES.index(sp.role))
    out, at, j = [], 0, 0
    for t in ids:
        while j < len(ends) - 1 and at >= ends[j]:
            j += 1
        out.append(kinds[j] if kinds else -1)
        at += len(tok.decode_bytes([t]))
    return out


def unit_roles(units, ids: Sequence[int], roles: Sequence[int], tok, enc) -> dict:
    """`roles` and `role_bytes` of a window whose units cover base tokens `ids`: a merged unit takes the role
    of its first base token; bytes are counted per base token."""
    if enc is None:
        per_unit = list(roles)
    else:
        per_unit, i = [], 0
        for u in np.asarray(units).tolist():
            per_unit.append(roles[i])
            i += 1 if u < enc.v_base else 2
    known = [(r, len(tok.decode_bytes([t]))) for t, r in zip(ids, roles) if r >= 0]
    nbytes = np.bincount([r for r, _ in known], weights=[b for _, b in known], minlength=len(ROLES))
    return {"roles": np.asarray(per_unit, np.int8), "role_bytes": nbytes.astype(np.int64)}


def role_bits_per_byte(windows: Sequence[Window], unit_nll) -> dict[str, float]:
    """Bits per byte of each role over `windows`, from their per-unit NLL in nats (row j = window j);
    windows without roles are left out, and roles without bytes."""
    bits, nbytes = np.zeros(len(ROLES)), np.zeros(len(ROLES))
    for j, w in enumerate(windows):
        if w.roles is None or unit_nll is None:
            continue
        known = w.roles >= 0
        bits += np.bincount(w.roles[known], weights=np.asarray(unit_nll[j][:len(w.units)])[known],
                            minlength=len(ROLES)) / np.log(2)
        nbytes += w.role_bytes
    return {ROLES[i]: float(bits[i] / nbytes[i]) for i in range(len(ROLES)) if nbytes[i] > 0}


def stream_windows(sid: str, tokens, ctx_len: int, tok, dyntok=None) -> list[Window]:
    """A whole token stream as consecutive windows (one dyntok segment each, advancing `dyntok`)."""
    buf, out = [int(t) for t in tokens], []
    while buf:
        out.append(cut_window(sid, buf, ctx_len, tok, dyntok))
    return out


class WindowAssembler:
    """Turns a stream of events into training windows; all state is JSON-serialisable."""

    def __init__(self, tokenizer, ctx_len: int, render: RenderOptions = RenderOptions(), dyntok=None):
        if ctx_len < 2:
            raise ValueError(f"ctx_len must be >= 2, got {ctx_len}")
        self.tok, self.ctx_len, self.render, self.dyntok = tokenizer, ctx_len, render, dyntok
        self.pending: dict[str, list[int]] = {}   # base tokens not yet in a window, per session
        self.roles: dict[str, list[int]] = {}     # ... and their roles (ingest.render.ROLES index, -1 unknown)
        self.started: set[str] = set()            # sessions that already produced text
        self.projects: dict[str, str] = {}        # session -> project folder (a subagent: its parent's)
        self.events_seen = 0

    def feed(self, ev: Event) -> list[Window]:
        """Add one event; return the windows it completes."""
        self.events_seen += 1
        if ev.session not in self.projects:
            self.projects[ev.session] = self.projects.get(ev.parent or "", ev.project or ev.cwd or "?")
        rendered = render_session([ev], self.render)
        text, spans = rendered.text, list(rendered.spans)
        if not text:
            return []
        if ev.session in self.started:
            text = SEP + text
            spans = [Span(0, len(SEP), "boilerplate")] + [Span(s.start + len(SEP), s.end + len(SEP), s.role)
                                                          for s in spans]
        self.started.add(ev.session)
        buf = self.pending.setdefault(ev.session, [])
        ids = self.tok.encode(text)
        buf.extend(ids)
        self.roles.setdefault(ev.session, []).extend(token_roles(self.tok, text, spans, ids))
        out = []
        while len(buf) >= self._base_per_window():
            out.append(self._cut(ev.session, buf))
        return out

    def flush(self, sessions: Iterable[str] | None = None) -> list[Window]:
        """End of stream: emit what is left (shorter, padded later) so no text is dropped."""
        out = []
        for sid in list(self.pending if sessions is None else sessions):
            buf = self.pending.get(sid, [])
            while buf:
                out.append(self._cut(sid, buf))
        return out

    def _base_per_window(self) -> int:
        return base_per_window(self.ctx_len, self.dyntok)

    def _cut(self, sid: str, buf: list[int]) -> Window:
        roles = self.roles.setdefault(sid, [-1] * len(buf))
        w = dataclasses.replace(cut_window(sid, buf, self.ctx_len, self.tok, self.dyntok, roles),
                                project=self.projects.get(sid))
        if not buf:
            self.pending.pop(sid, None)
            self.roles.pop(sid, None)
        return w

    def state_dict(self) -> dict:
        return {"pending": self.pending, "started": sorted(self.started), "events_seen": self.events_seen,
                "projects": self.projects,
                "roles": {k: "".join(ROLE_CHARS[r + 1] for r in v) for k, v in self.roles.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.pending = {k: list(v) for k, v in d["pending"].items()}
        saved = d.get("roles", {})  # a checkpoint from before roles: the pending tokens' roles are unknown
        self.roles = {k: [ROLE_CHARS.index(c) - 1 for c in saved[k]] if k in saved else [-1] * len(v)
                      for k, v in self.pending.items()}
        self.started = set(d["started"])
        self.events_seen = int(d["events_seen"])
        self.projects = dict(d.get("projects", {}))


def make_batch(windows: Sequence[Window], weights: Sequence[float], *, batch_size: int, ctx_len: int,
               n_slots: int | None = None) -> Batch:
    """Inputs are [0, u_0, ..., u_{n-2}] (0 = separator), targets u_0..u_{n-1}; rows past len(windows) are padding."""
    if len(windows) > batch_size:
        raise ValueError(f"{len(windows)} windows do not fit a batch of {batch_size}")
    B, T = batch_size, ctx_len
    inputs = np.zeros((B, T), np.int32)
    targets = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.float32)
    weight = np.zeros((B,), np.float32)
    nbytes = np.zeros((B,), np.float32)
    slots = np.full((B, n_slots, 2), -1, np.int32) if n_slots else None
    prior = np.full((B, n_slots, 2), -1, np.int32) if n_slots else None
    avail = np.full((B, n_slots), np.iinfo(np.int32).max, np.int32) if n_slots else None
    for i, (w, wt) in enumerate(zip(windows, weights)):
        n = len(w.units)
        if not 0 < n <= T:
            raise ValueError(f"window of session {w.session} has {n} units; it must hold 1..{T}")
        targets[i, :n] = w.units
        inputs[i, 1:n] = w.units[: n - 1]
        mask[i, :n] = 1.0
        weight[i] = wt
        nbytes[i] = w.nbytes
        if n_slots:
            if w.slots is None:
                raise ValueError("merges are on but a window carries no slot table")
            slots[i], prior[i], avail[i] = w.slots, w.prior_slots, w.avail_from
    slot_batch = None
    if n_slots:
        # each window is one dyntok segment: unit t's table is read at index t, and target 0 has no
        # previous unit of its segment (its input is the separator)
        slot_batch = SlotBatch(SlotTables(jnp.asarray(slots), jnp.asarray(prior), jnp.asarray(avail)),
                               UnitPositions.of(inputs, first_in_segment=True))
    return Batch(jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(mask), jnp.asarray(weight),
                 jnp.asarray(nbytes), slot_batch)
