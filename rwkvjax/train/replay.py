"""Surprise-prioritised replay buffer of training windows (host side, numpy).

Priority is the window's mean per-token NLL under the current model, measured before the update
("surprise"), or the reducible surprise NLL_current - NLL_frozen (RHO-LOSS), which keeps unlearnable
noise (hashes, base64) from crowding the buffer. When full, the lowest-priority window among the
stored ones and the candidate is dropped (`priority`), or the oldest (`fifo`). Sampling follows
P(i) ∝ (max(p_i, 0) + eps)^alpha with importance weights (N P(i))^-beta / max_j (N P(j))^-beta
(PER); replayed windows get their priority refreshed with `update`.

Each entry is a `Window` (its units and, with merges, its slot tables), its NLL under the frozen model
(for `reducible`) and the text the caller passes (already redacted by ingestion). `to_dict` is what a
training checkpoint stores (its host JSON, owner-only: `rwkvjax.io.checkpoint`).

A window whose text holds a redaction marker or a high-entropy run (`sensitive`) is *suspect*: a credential is
the most surprising text of a session, so surprise alone would keep it longest and replay it most (2.1x the
average priority was measured with leaked keys). A suspect window's priority is capped at the typical (median)
priority of the ordinary windows stored, on admission, whenever the ordinary windows change and on `update`;
and when the buffer is full, suspect windows go before ordinary ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from ingest.redact import MARK, random_shaped
from rwkvjax.errors import DataError
from rwkvjax.train.data import Window

ADMISSIONS = ("priority", "fifo")
PRIORITIES = ("surprise", "reducible")


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    capacity: int = 1000
    admission: str = "priority"
    priority: str = "surprise"
    alpha: float = 0.6
    beta: float = 0.4
    eps: float = 1e-3

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError(f"ReplaySettings.capacity must be >= 1, got {self.capacity}")
        if self.admission not in ADMISSIONS:
            raise ValueError(f"ReplaySettings.admission must be one of {ADMISSIONS}, got {self.admission!r}")
        if self.priority not in PRIORITIES:
            raise ValueError(f"ReplaySettings.priority must be one of {PRIORITIES}, got {self.priority!r}")
        if not (self.alpha >= 0 and 0 <= self.beta <= 1 and self.eps > 0):
            raise ValueError(f"ReplaySettings needs alpha >= 0, 0 <= beta <= 1, eps > 0; got "
                             f"alpha={self.alpha}, beta={self.beta}, eps={self.eps}")


# A redaction marker as ingestion writes it (`[REDACTED:<rule>]`), whatever the rule.
_MARKER = re.compile(re.escape(MARK.split("{}")[0]) + r"[A-Za-z0-9_.\-]+\]")
# Runs of the characters credentials are written in, long enough to hold one (as ingestion's candidates).
_RUN = re.compile(r"[A-Za-z0-9_+/=\-]{20,}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_CLASS_RUN = re.compile(r"[a-z]+|[A-Z]+|[0-9]+")


def _scrambled(run: str) -> bool:
    """Whether a segment of `run` (between `_ - . / ~ = +`) of 10 characters or more switches case and digits
    like random text: at least max(2, length/8) one-character runs of a class (a Capitalised word's first letter
    aside). Identifiers and paths (`ReplayBufferSettings`, `/Users/me/x86_64`) have one or none; of random
    tokens 98% qualify, of the code and docs measured 0.6% (most of those base64 blobs themselves)."""
    for seg in re.split(r"[_\-./~=+]+", run):
        if len(seg) < 10 or _HEX.fullmatch(seg):
            continue
        parts = _CLASS_RUN.findall(seg)
        singles = sum(len(x) == 1 and not (x.isupper() and i + 1 < len(parts) and parts[i + 1].islower())
                      for i, x in enumerate(parts))
        if singles >= max(2, len(seg) / 8):
            return True
    return False


def high_entropy_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of the runs in `text` that read as random: keys, tokens, base64 (the entropy test of
    `ingest.redact`, `random_shaped`, without its context words; a non-hex run must also switch character
    classes like random text, `_scrambled`). Git SHAs (40, 64 hex digits) and UUIDs are public names."""
    return [m.span() for m in _RUN.finditer(text)
            if random_shaped(m.group()) and (_HEX.fullmatch(m.group()) or _scrambled(m.group()))]


def sensitive(text: str | None) -> bool:
    """Whether a window's text holds a redaction marker or a high-entropy run (a secret, redacted or not)."""
    return bool(text) and (_MARKER.search(text) is not None or bool(high_entropy_runs(text)))


class ReplayBuffer:
    def __init__(self, settings: ReplaySettings = ReplaySettings(), seed: int = 0):
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.windows: list[Window] = []
        self.nll_frozen: list[float | None] = []
        self.texts: list[str | None] = []
        self.suspect: list[bool] = []  # `sensitive(text)` of each entry: derived from the text, not stored
        self.priority = np.zeros(0, np.float64)
        self.seq = np.zeros(0, np.int64)  # admission order, for fifo and tie-breaking
        self.replays = np.zeros(0, np.int64)
        self.next_seq = 0
        self.admitted = self.rejected = self.evicted = 0

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def tokens(self) -> list[np.ndarray]:
        return [w.units for w in self.windows]

    def priority_of(self, nll: float, nll_frozen: float | None = None) -> float:
        """Mean per-token NLL (nats or bits, consistently) -> priority under the configured rule."""
        if not math.isfinite(nll):
            raise ValueError(f"replay: NLL must be finite, got {nll}")
        if self.settings.priority == "surprise":
            return float(nll)
        if nll_frozen is None or not math.isfinite(nll_frozen):
            raise ValueError("replay: priority='reducible' needs a finite nll_frozen (NLL under the untuned model)")
        return float(nll) - float(nll_frozen)

    def add(self, window: Window | Sequence[int], nll: float, nll_frozen: float | None = None,
            text: str | None = None) -> int | None:
        """Offer a window (or bare token ids); returns its index in the buffer, or None when it was the one dropped."""
        if not isinstance(window, Window):
            toks = np.asarray(window)
            if toks.ndim != 1 or toks.size == 0 or not np.issubdtype(toks.dtype, np.integer):
                raise ValueError(f"replay: a window must be a non-empty 1-D sequence of token ids, got shape "
                                 f"{toks.shape} dtype {toks.dtype}")
            window = Window("", toks.astype(np.int32), 0, int(toks.size))
        p = self.priority_of(nll, nll_frozen)
        frozen = None if nll_frozen is None else float(nll_frozen)
        suspect = sensitive(text)
        if len(self) < self.settings.capacity:
            self.windows.append(window)
            self.nll_frozen.append(frozen)
            self.texts.append(text)
            self.suspect.append(suspect)
            self.priority = np.append(self.priority, p)
            self.seq = np.append(self.seq, self.next_seq)
            self.replays = np.append(self.replays, 0)
            i = len(self) - 1
        else:
            if self.settings.admission == "fifo":
                i = int(np.argmin(self.seq))
            else:
                if suspect:
                    p = min(p, self._typical())
                # suspect windows first, then the lowest priority; among equals the oldest goes
                ordinary = ~np.asarray(self.suspect, bool)
                i = int(np.lexsort((self.seq, self.priority, ordinary))[0])
                # the candidate is the newest: it goes when it ranks no higher than the stored one
                if (not suspect, p) <= (bool(ordinary[i]), float(self.priority[i])):
                    self.rejected += 1
                    self.next_seq += 1
                    return None
            self.windows[i], self.nll_frozen[i], self.texts[i], self.priority[i] = window, frozen, text, p
            self.suspect[i] = suspect
            self.seq[i], self.replays[i] = self.next_seq, 0
            self.evicted += 1
        self.next_seq += 1
        self.admitted += 1
        self._cap()
        return i

    def _typical(self) -> float:
        """The median priority of the ordinary entries (the lower middle value for an even count); +inf without
        any. Only ordinary priorities decide it, and the cap never moves them, so capping again changes nothing:
        a buffer read back from a checkpoint keeps exactly the priorities it was saved with. (A median over
        capped suspect priorities would ratchet down at every capping.) A buffer holding suspect windows only has
        no typical window to hold them to; they still go first once ordinary ones arrive."""
        ordinary = self.priority[~np.asarray(self.suspect, bool)]
        return float(np.sort(ordinary)[(len(ordinary) - 1) // 2]) if len(ordinary) else math.inf

    def _cap(self) -> None:
        """Hold every suspect entry at or below the typical priority. Surprise is why a secret would rank
        first (a key is the least predictable text of a session), so for a window holding a redaction marker
        or a random-looking run surprise may not raise its rank: it is kept and replayed no more than a
        typical window."""
        if not any(self.suspect):
            return
        sus = np.asarray(self.suspect, bool)
        self.priority[sus] = np.minimum(self.priority[sus], self._typical())

    def probabilities(self) -> np.ndarray:
        if not len(self):
            raise ValueError("replay: the buffer is empty")
        s = self.settings
        w = (np.maximum(self.priority, 0.0) + s.eps) ** s.alpha
        return w / w.sum()

    def sample(self, n: int, beta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices [n], importance weights [n] in (0, 1]); with replacement, P ∝ priority^alpha."""
        beta = self.settings.beta if beta is None else beta
        P = self.probabilities()
        idx = self.rng.choice(len(P), size=n, p=P)
        # (N P)^-beta / max_j (N P_j)^-beta, in log space so tiny P cannot overflow
        logw = -beta * (np.log(P[idx]) - np.log(P.min()))
        return idx, np.exp(logw)

    def update(self, idx: Sequence[int], nll: Sequence[float], nll_frozen: Sequence[float] | None = None):
        """Refresh priorities of replayed windows with their NLL measured at replay time (the frozen NLL stored
        at admission unless given)."""
        idx = np.asarray(idx, np.int64)
        frozen = [self.nll_frozen[i] for i in idx] if nll_frozen is None else list(nll_frozen)
        if not len(idx) == len(nll) == len(frozen):
            raise ValueError("replay.update: idx, nll and nll_frozen must have the same length")
        for i, a, b in zip(idx, nll, frozen):
            self.priority[i] = self.priority_of(float(a), None if b is None else float(b))
            self.replays[i] += 1
        # a refreshed surprise may not lift a suspect window above the typical one either
        self._cap()

    # ----- persistence -----
    def to_dict(self) -> dict:
        """JSON-able state for the checkpoint (tokens, redacted text, priorities, RNG, counters)."""
        return {
            "settings": dataclasses.asdict(self.settings),
            "windows": [w.to_dict() for w in self.windows], "nll_frozen": list(self.nll_frozen),
            "texts": list(self.texts),
            "priority": self.priority.tolist(), "seq": self.seq.tolist(), "replays": self.replays.tolist(),
            "next_seq": self.next_seq,
            "counters": {"admitted": self.admitted, "rejected": self.rejected, "evicted": self.evicted},
            "rng": self.rng.bit_generator.state,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "replay state") -> "ReplayBuffer":
        try:
            buf = cls(ReplaySettings(**d["settings"]))
            if "windows" in d:
                windows = [Window.from_dict(w) for w in d["windows"]]
            else:  # written before windows lived in the buffer: bare token ids
                windows = [Window("", np.asarray(t, np.int32), 0, len(t)) for t in d["tokens"]]
            n = len(windows)
            frozen = d.get("nll_frozen", [None] * n)
            for field, vals in (("texts", d["texts"]), ("priority", d["priority"]), ("seq", d["seq"]),
                                ("replays", d["replays"]), ("nll_frozen", frozen)):
                if len(vals) != n:
                    raise DataError(f"{source}: field '{field}' has {len(vals)} entries, there are {n} windows")
            if n > buf.settings.capacity:
                raise DataError(f"{source}: {n} windows exceed capacity {buf.settings.capacity}")
            buf.windows = windows
            buf.nll_frozen = list(frozen)
            buf.texts = list(d["texts"])
            buf.suspect = [sensitive(t) for t in buf.texts]
            buf.priority = np.asarray(d["priority"], np.float64).reshape(n)
            buf.seq = np.asarray(d["seq"], np.int64).reshape(n)
            buf.replays = np.asarray(d["replays"], np.int64).reshape(n)
            buf.next_seq = int(d["next_seq"])
            c = d["counters"]
            buf.admitted, buf.rejected, buf.evicted = c["admitted"], c["rejected"], c["evicted"]
            buf.rng.bit_generator.state = d["rng"]
            buf._cap()  # a buffer saved before suspect windows were capped is capped as it is read
        except (KeyError, TypeError) as e:
            raise DataError(f"{source} is malformed ({e!r}); it must come from ReplayBuffer.to_dict()") from e
        return buf

    @classmethod
    def from_host(cls, host: dict, source: str = "replay state") -> "ReplayBuffer | None":
        """The buffer a checkpoint step's host JSON holds under "replay" (None: the learner had none). Steps
        written before the buffer held its windows keep them beside it, under "replay_windows"."""
        d = host.get("replay")
        if d is None:
            return None
        if "replay_windows" in host:
            d = dict(d, windows=[r["window"] for r in host["replay_windows"]],
                     nll_frozen=[r["nll_frozen"] for r in host["replay_windows"]])
        return cls.from_dict(d, source=source)
