"""Online dynamic tokenizer: frequent base-token bigrams become virtual tokens in a fixed slot table.

The tokenizer watches the base-token stream through a sliding window of the last `window` mergeable
bigram occurrences. A bigram seen `threshold` times in the window is promoted into one of `n_slots`
slots (LRU eviction); its unit id is `v_base + slot`, so model shapes stay static (`v_base + n_slots`).

Causality. Encoding walks the stream left to right. At each position it merges the next two base
tokens into one unit iff that pair holds a slot *in the table built from the tokens already
consumed*; only then does it observe the consumed tokens (which may promote or evict). A decoder
that expands each unit with its own table and then observes the expanded tokens replays exactly
the same state (`decode_segment`).

Segments. One `encode` call is one segment (a training chunk). Within a segment a slot is never
reassigned once it has been referenced (installed or emitted), and the slot of the previous
segment's last unit stays pinned too. Hence the end-of-segment table (`Encoded.slots`) reads every
unit of the segment and the carried-over unit, and later evictions cannot change the meaning of an
already-encoded segment. A promotion that finds every slot pinned is deferred (retried on the next
occurrence of the pair).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np

from rwkvjax.errors import DataError

NEVER = np.iinfo(np.int32).max  # avail_from of an empty slot


@dataclasses.dataclass(frozen=True)
class DynTokSettings:
    """Every knob of the dynamic tokenizer. `protected` ids never take part in a merge."""

    v_base: int
    window: int = 512
    threshold: int = 3
    n_slots: int = 256
    protected: frozenset[int] = frozenset({0})
    recent_segments: int = 64  # how many segments the "recent" compression figure covers

    def __post_init__(self):
        for name in ("v_base", "window", "threshold", "n_slots", "recent_segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"DynTokSettings.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "protected", frozenset(int(i) for i in self.protected))


def digit_protected(decode_bytes: Callable[[Sequence[int]], bytes], vocab_size: int) -> frozenset[int]:
    """Id 0 plus every id whose bytes contain an ASCII digit (zip2zip++: merging digits hurts math).

    Ids the base tokenizer cannot decode are protected too: they are not text and must stay alone.
    """
    out = {0}
    digits = set(b"0123456789")
    for i in range(vocab_size):
        try:
            bs = decode_bytes([i])
        except (ValueError, KeyError, IndexError):
            out.add(i)
            continue
        if digits.intersection(bs):
            out.add(i)
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One encoded segment and everything needed to read it without the tokenizer.

    units [T] int32: base ids < v_base, virtual ids v_base + slot.
    slots [S,2] int32: constituent base ids per slot at the end of the segment (-1 = empty).
    avail_from [S] int32: first index into `units` at which the slot (with this pair) may appear;
        0 for slots installed before the segment, NEVER for empty slots. Use it to mask the output side.
    prior [S,2] int32: the table when the segment began. A slot changes at most once per segment
        (installing pins it), so the table the encoder consulted for unit t is `pairs_at(t)`:
        `prior[s]` while t < avail_from[s], `slots[s]` from then on.
    prev_unit: the previous segment's last unit (-1 at stream start), readable with `slots`.
    n_base: base tokens covered by `units`.
    """

    units: np.ndarray
    slots: np.ndarray
    avail_from: np.ndarray
    prev_unit: int
    n_base: int
    v_base: int
    prior: np.ndarray

    def pairs_at(self) -> np.ndarray:
        """[T,S,2]: the causal table in force when unit t was decided (-1 = no pair in that slot)."""
        return table_at(self.prior, self.slots, self.avail_from, np.arange(len(self.units)))

    def decode(self) -> list[int]:
        return expand(self.units, self.slots, self.v_base)

    def target_mask(self) -> np.ndarray:
        """[T,S] bool: may slot s be the unit at index t (the target when units[t] is predicted)?"""
        return self.pairs_at()[..., 0] >= 0

    def excluded_next(self) -> list[frozenset[int]]:
        """Per unit index t: base ids that cannot start unit t (canonical-stream rule).

        Unit t-1 = base a was emitted alone although the table then held (a, b): so the next base token
        is not b, and no unit starting with b can follow inside the segment. Empty for t = 0.
        """
        pairs = self.pairs_at()
        out = [frozenset()]
        for t in range(1, len(self.units)):
            a = int(self.units[t - 1])
            out.append(frozenset(int(b) for x, b in pairs[t - 1] if a < self.v_base and x == a))
        return out

    def training_pair(self, bos: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [T], targets [T], target_mask [T,S]): input t is the unit before target t.

        The first input is the previous segment's last unit (its recurrent state is carried in the
        caller), or `bos` at stream start, so every unit of the stream is scored exactly once.
        """
        first = self.prev_unit if self.prev_unit >= 0 else bos
        inputs = np.concatenate([[first], self.units]).astype(np.int32)[: len(self.units)]
        return inputs, self.units.astype(np.int32), self.target_mask()


def table_at(prior: np.ndarray, slots: np.ndarray, avail_from: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Slot pairs in force at unit indices t: [..., S, 2] (numpy twin of the model's device-side rule)."""
    before = np.asarray(t)[..., None, None] < avail_from[:, None]
    return np.where(before, prior, slots)


def expand(units: Iterable[int], slots: np.ndarray, v_base: int) -> list[int]:
    """Units -> base ids with a fixed slot table."""
    out: list[int] = []
    for u in units:
        u = int(u)
        if u < v_base:
            out.append(u)
            continue
        s = u - v_base
        if not 0 <= s < len(slots) or slots[s, 0] < 0:
            raise ValueError(f"unit {u} refers to slot {s}, which is empty or out of range")
        out.extend((int(slots[s, 0]), int(slots[s, 1])))
    return out


class DynamicTokenizer:
    """Stateful encoder/decoder. Both directions mutate the same kind of state identically."""

    def __init__(self, settings: DynTokSettings, decode_bytes: Callable[[Sequence[int]], bytes] | None = None):
        self.settings = settings
        self.decode_bytes = decode_bytes
        S = settings.n_slots
        self._window: collections.deque[tuple[int, int]] = collections.deque()
        self._counts: dict[tuple[int, int], int] = {}
        self._slot_pair: list[tuple[int, int] | None] = [None] * S
        self._pair_slot: dict[tuple[int, int], int] = {}
        self._lru: collections.OrderedDict[int, None] = collections.OrderedDict()  # oldest first
        self._uses = [0] * S
        self._born = [0] * S  # base tokens consumed before the slot's pair was installed (for its age)
        self._prev: int = -1  # last base token observed (bigrams span segment boundaries)
        self._last_unit: int = -1
        self._recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=settings.recent_segments)
        self.promotions = self.evictions = self.merges = self.deferred = 0
        self.base_tokens = self.units_out = 0
        # per-segment scratch
        self._pinned: set[int] = set()
        self._installed_at: dict[int, int] = {}
        self._n_units = 0

    # ----- state machine shared by encoder and decoder -----
    def _begin_segment(self):
        self._pinned = set()
        self._installed_at = {}
        self._n_units = 0
        self._prior = np.asarray([p if p is not None else (-1, -1) for p in self._slot_pair], np.int32)
        if self._last_unit >= self.settings.v_base:
            self._pinned.add(self._last_unit - self.settings.v_base)

    def _observe(self, tok: int):
        prev, self._prev = self._prev, tok
        prot = self.settings.protected
        if prev < 0 or prev in prot or tok in prot:
            return
        pair = (prev, tok)
        self._window.append(pair)
        c = self._counts[pair] = self._counts.get(pair, 0) + 1
        if len(self._window) > self.settings.window:
            old = self._window.popleft()
            n = self._counts[old] - 1
            if n:
                self._counts[old] = n
            else:
                del self._counts[old]
        if c >= self.settings.threshold and pair not in self._pair_slot:
            self._promote(pair)

    def _promote(self, pair):
        if len(self._lru) < self.settings.n_slots:
            slot = self._slot_pair.index(None)  # lowest free slot: deterministic for the replaying decoder
        else:
            slot = next((s for s in self._lru if s not in self._pinned), None)  # LRU order, oldest first
            if slot is None:
                self.deferred += 1
                return
            del self._pair_slot[self._slot_pair[slot]]
            self.evictions += 1
        self._slot_pair[slot] = pair
        self._pair_slot[pair] = slot
        self._uses[slot] = 0
        self._born[slot] = self.base_tokens
        self._lru[slot] = None
        self._lru.move_to_end(slot)
        self._pinned.add(slot)
        # the unit about to be emitted next may already use this slot
        self._installed_at[slot] = self._n_units
        self.promotions += 1

    def _emit_virtual(self, slot: int):
        self._lru.move_to_end(slot)
        self._pinned.add(slot)
        self._uses[slot] += 1
        self.merges += 1

    def _end_segment(self, units: list[int], n_base: int) -> Encoded:
        S = self.settings.n_slots
        slots = np.full((S, 2), -1, np.int32)
        avail = np.full((S,), NEVER, np.int32)
        for s, p in enumerate(self._slot_pair):
            if p is not None:
                slots[s] = p
                avail[s] = self._installed_at.get(s, 0)
        enc = Encoded(np.asarray(units, np.int32), slots, avail, self._last_unit, n_base, self.settings.v_base,
                      self._prior.reshape(S, 2))
        if units:
            self._last_unit = units[-1]
        self.base_tokens += n_base
        self.units_out += len(units)
        self._recent.append((n_base, len(units)))
        return enc

    # ----- public API -----
    def encode(self, ids: Sequence[int], max_units: int | None = None) -> Encoded:
        """Base ids of one segment -> Encoded (mutates the tokenizer state).

        With `max_units` the segment ends after that many units; `Encoded.n_base` says how many of `ids`
        it consumed (the rest belongs to the next segment). `2 * max_units` ids always fill it.
        """
        V = self.settings.v_base
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < V]
        if bad:
            raise ValueError(f"dynamic tokenizer: base ids {bad[:5]} are outside 0..{V - 1} (v_base={V})")
        self._begin_segment()
        units: list[int] = []
        pair_slot = self._pair_slot
        i, n = 0, len(ids)
        if max_units is not None and max_units < 1:
            raise ValueError(f"dynamic tokenizer: max_units must be >= 1, got {max_units}")
        cap = n if max_units is None else max_units
        while i < n and len(units) < cap:
            a = ids[i]
            slot = pair_slot.get((a, ids[i + 1])) if i + 1 < n else None
            if slot is not None:
                units.append(V + slot)
                self._emit_virtual(slot)
                self._n_units += 1
                self._observe(a)
                self._observe(ids[i + 1])
                i += 2
            else:
                units.append(a)
                self._n_units += 1
                self._observe(a)
                i += 1
        return self._end_segment(units, i)

    def decode_segment(self, units: Sequence[int]) -> list[int]:
        """Replay decoder: expands units with the causal table and mutates state exactly like `encode`."""
        V = self.settings.v_base
        self._begin_segment()
        out: list[int] = []
        for u in units:
            u = int(u)
            if u < 0:
                raise ValueError(f"unit {u} is negative")
            if u < V:
                out.append(u)
                self._n_units += 1
                self._observe(u)
                continue
            s = u - V
            if s >= self.settings.n_slots or self._slot_pair[s] is None:
                raise ValueError(f"unit {u} refers to slot {s}, which is not installed at this point of the stream")
            a, b = self._slot_pair[s]
            self._emit_virtual(s)
            self._n_units += 1
            out.extend((a, b))
            self._observe(a)
            self._observe(b)
        self._end_segment([int(u) for u in units], len(out))
        return out

    # ----- stats -----
    def stats(self, top: int = 10) -> dict:
        recent_b = sum(b for b, _ in self._recent)
        recent_u = sum(u for _, u in self._recent)
        return {
            "promotions": self.promotions, "evictions": self.evictions, "merges": self.merges,
            "deferred_promotions": self.deferred, "active_slots": len(self._lru),
            "base_tokens": self.base_tokens, "recurrent_steps": self.units_out,
            "steps_per_base_token": self.units_out / self.base_tokens if self.base_tokens else 1.0,
            "recent_steps_per_base_token": recent_u / recent_b if recent_b else 1.0,
            "top_merges": self.top_merges(top),
        }

    def top_merges(self, n: int = 10) -> list[dict]:
        """Active slots by uses since installation, with their decoded text when a decoder was given."""
        rows = [(self._uses[s], s, p) for s, p in enumerate(self._slot_pair) if p is not None]
        rows.sort(key=lambda r: (-r[0], r[1]))
        out = []
        for uses, s, (a, b) in rows[:n]:
            row = {"slot": s, "pair": [a, b], "uses": uses, "age_base_tokens": self.base_tokens - self._born[s]}
            if self.decode_bytes is not None:
                row["text"] = self.decode_bytes([a, b]).decode("utf-8", errors="backslashreplace")
            out.append(row)
        return out

    # ----- checkpoint -----
    def state_dict(self) -> dict:
        """JSON-able state (counts are rebuilt from the window on load)."""
        st = self.settings
        return {
            "settings": {"v_base": st.v_base, "window": st.window, "threshold": st.threshold,
                         "n_slots": st.n_slots, "recent_segments": st.recent_segments,
                         "protected": sorted(st.protected)},
            "window": [list(p) for p in self._window],
            "slots": [list(p) if p is not None else None for p in self._slot_pair],
            "lru": list(self._lru),
            "uses": list(self._uses),
            "born": list(self._born),
            "prev": self._prev, "last_unit": self._last_unit,
            "recent": [list(r) for r in self._recent],
            "counters": {"promotions": self.promotions, "evictions": self.evictions, "merges": self.merges,
                         "deferred": self.deferred, "base_tokens": self.base_tokens,
                         "units_out": self.units_out},
        }

    @classmethod
    def from_state_dict(cls, d: dict, decode_bytes=None) -> "DynamicTokenizer":
        try:
            s = d["settings"]
            settings = DynTokSettings(v_base=s["v_base"], window=s["window"], threshold=s["threshold"],
                                      n_slots=s["n_slots"], recent_segments=s["recent_segments"],
                                      protected=frozenset(s["protected"]))
            tok = cls(settings, decode_bytes)
            if len(d["slots"]) != settings.n_slots:
                raise ValueError(f"field 'slots' has {len(d['slots'])} entries, settings say n_slots={settings.n_slots}")
            for p in d["window"]:
                pair = (int(p[0]), int(p[1]))
                tok._window.append(pair)
                tok._counts[pair] = tok._counts.get(pair, 0) + 1
            for slot, p in enumerate(d["slots"]):
                if p is not None:
                    tok._slot_pair[slot] = (int(p[0]), int(p[1]))
                    tok._pair_slot[tok._slot_pair[slot]] = slot
            for slot in d["lru"]:
                tok._lru[int(slot)] = None
            if set(tok._lru) != set(tok._pair_slot.values()):
                raise ValueError("field 'lru' does not list exactly the installed slots")
            tok._uses = [int(u) for u in d["uses"]]
            tok._born = [int(b) for b in d.get("born", [0] * settings.n_slots)]
            tok._prev, tok._last_unit = int(d["prev"]), int(d["last_unit"])
            tok._recent.extend((int(a), int(b)) for a, b in d["recent"])
            c = d["counters"]
            tok.promotions, tok.evictions, tok.merges = c["promotions"], c["evictions"], c["merges"]
            tok.deferred, tok.base_tokens, tok.units_out = c["deferred"], c["base_tokens"], c["units_out"]
        except (KeyError, TypeError, IndexError) as e:
            raise DataError(f"dynamic tokenizer state is malformed ({e!r}); "
                             "it must come from DynamicTokenizer.state_dict()") from e
        return tok


def for_tokenizer(tok, *, window: int = 512, threshold: int = 3, n_slots: int = 256) -> DynamicTokenizer:
    """The one construction: a dynamic tokenizer over base tokenizer `tok` (id 0 and every digit-bearing
    token protected), with a fresh table."""
    V = tok.vocab_size
    return DynamicTokenizer(DynTokSettings(v_base=V, window=window, threshold=threshold, n_slots=n_slots,
                                           protected=digit_protected(tok.decode_bytes, V)), tok.decode_bytes)
