"""`SessionMemory`: what the user did, kept as a history and context tables, mixed online with the frozen model.

The model's per-node opinion (`rwkvjax.memory.lm`) and the memory's predictors are mixed by small learned
mixers (`rwkvjax.memory.kernels`); the result is an exact distribution over the whole vocabulary, so its code
length is comparable with every other bits-per-byte figure. Everything the memory knows is a handful of flat
numpy arrays, saved and restored bit for bit (`state_dict`, `save`, `load`), bounded by `memory_mb`:

- a ring of the most recent symbols (a quarter of the budget): older history is overwritten, recent kept;
- context counters in 32-byte buckets (half of the budget): a new context takes over the less used bucket
  of its pair, so frequent and recent contexts survive;
- the match models' position tables (the last quarter): entries pointing past the ring are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from rwkvjax.errors import ConfigError, DataError, MissingFile
from rwkvjax.memory import DEFAULT_MB, kernels as K

FORMAT = "rwkvjax-session-memory-1"
STATE = ("R", "hist", "hashes", "table", "mt", "sm", "W", "wf", "apm")


def nbits_for(vocab_size: int) -> int:
    """Bits per symbol, a multiple of 4 (nibble buckets): 8 for bytes, 16 for World ids."""
    if vocab_size < 2 or vocab_size > 1 << 16:
        raise ConfigError(f"session memory: vocabulary of {vocab_size} symbols; supported 2..65536")
    return max(4, -(-math.ceil(math.log2(vocab_size)) // 4) * 4)


@dataclasses.dataclass(frozen=True)
class MemorySettings:
    """How a memory is built. `for_vocab` gives the measured defaults of a vocabulary."""

    vocab_size: int
    memory_mb: float = DEFAULT_MB
    orders: tuple[int, ...] = (1, 2, 3, 4, 6)   # context orders, in symbols
    word: bool = True                           # word contexts (bytes only)
    match_min: tuple[int, int] = (6, 20)        # symbols a match model needs before it follows a match
    counter_limit: int = 15                     # counters adapt at 1/(n + 1.5), n capped here (at most 15)
    lr: float = 0.02                            # mixers' learning rate (stretch domain)
    lr_final: float = 0.005                     # final mixer's learning rate
    bias: float = 0.3                           # the mixers' constant input
    match: bool = True                          # the match models (off only to measure what they bring)
    mixer_contexts: bool = True                 # weight sets chosen by context (off: one set per bit position)
    sse: bool = True                            # the SSE map after the mixers (off only to measure it)

    @staticmethod
    def for_vocab(vocab_size: int, memory_mb: float = DEFAULT_MB) -> "MemorySettings":
        if vocab_size <= 256:
            return MemorySettings(vocab_size, memory_mb)
        # token ids: a token is ~4 bytes, so shorter orders and matches; words are already tokens
        return MemorySettings(vocab_size, memory_mb, orders=(1, 2, 3, 4), word=False, match_min=(3, 8))

    def __post_init__(self):
        nbits_for(self.vocab_size)
        if not 1 <= self.counter_limit <= 15:
            raise ConfigError(f"session memory: counter_limit {self.counter_limit} (1..15: a 4-bit count)")
        if len(self.match_min) != 2 or min(self.match_min) < 1:
            raise ConfigError(f"session memory: match_min {self.match_min} (two lengths >= 1)")
        if not (math.isfinite(self.memory_mb) and self.memory_mb >= self.min_mb()):
            raise ConfigError(f"--memory-mb {self.memory_mb}: a session memory for {self.vocab_size} symbols needs at "
                              f"least {self.min_mb()} MB")
        if len(self.orders) + 2 * self.word > K.MAX_CTX or any(o < 1 for o in self.orders) \
                or list(self.orders) != sorted(set(self.orders)):
            raise ConfigError(f"session memory: orders {self.orders} (increasing, each >= 1, at most {K.MAX_CTX} "
                              "contexts)")
        if self.word and self.vocab_size > 256:
            raise ConfigError("session memory: word contexts are for byte vocabularies")

    @property
    def nbits(self) -> int:
        return nbits_for(self.vocab_size)

    @property
    def contexts(self) -> tuple[int, ...]:
        return tuple(self.orders) + ((-1, -2) if self.word else ())

    def _fixed_bytes(self) -> int:
        """Bytes that do not grow with the budget: mixer weights, match maps and the SSE map."""
        nb, nctx = self.nbits, len(self.contexts)
        return (sum(K.n_sets(nb, nctx)) * K.n_inputs(nctx) * 8 + nb * 3 * 8 + 2 * K.N_LENB * nb * 2 * 4 + 4096
                + K.n_sets(nb, nctx)[0] * 256 * 33 * 2)

    def min_mb(self) -> int:
        """The smallest budget: the fixed part and 1 MB of tables."""
        return math.ceil(self._fixed_bytes() / (1 << 20)) + 1

    def sizes(self) -> tuple[int, int, int]:
        """log2 of (history symbols, context buckets, match-table entries): powers of two near a 1/4 : 1/2 : 1/4
        split of `memory_mb` less the mixers' weights, then doubled in that priority while the whole fits."""
        budget = int(self.memory_mb * (1 << 20)) - self._fixed_bytes()
        bits = {"t": max(8, int(math.log2(budget / 2 / 32))),   # 32-byte buckets
                "h": max(10, int(math.log2(budget / 4 / 2))),  # uint16 symbols
                "m": max(8, int(math.log2(budget / 4 / 16)))}  # two int64 tables
        unit = {"t": 32, "h": 2, "m": 16}
        used = lambda: sum(unit[k] << b for k, b in bits.items())
        for k in ("t", "h", "m"):
            bits[k] += 1
            if used() > budget:
                bits[k] -= 1
        return bits["h"], bits["t"], bits["m"]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["orders"], d["match_min"] = list(self.orders), list(self.match_min)
        return d

    @staticmethod
    def from_json(d: dict) -> "MemorySettings":
        return MemorySettings(**{**d, "orders": tuple(d["orders"]), "match_min": tuple(d["match_min"])})


class SessionMemory:
    """One memory: `score` (prequential bits of a symbol stream, then learn it), `distribution` (the mixture
    for the next symbol, nothing learned), `absorb` (learn text the model did not score), `draft` (what the
    match models expect next, for speculative decoding)."""

    def __init__(self, settings: MemorySettings, arrays: dict[str, np.ndarray] | None = None):
        self.settings = s = settings
        hbits, tbits, mbits = s.sizes()
        nb, ctx = s.nbits, s.contexts
        P = np.zeros(K.P_LEN, np.int64)
        P[K.P_NBITS], P[K.P_V], P[K.P_HBITS], P[K.P_TBITS] = nb, s.vocab_size, hbits, tbits
        never = 1 << 40  # a minimum match length no history reaches: the match models stay silent
        P[K.P_NCTX], P[K.P_WORD], P[K.P_M1MIN], P[K.P_M2MIN] = len(ctx), int(s.word), *(
            s.match_min if s.match else (never, never))
        P[K.P_MBITS], P[K.P_LIMIT], P[K.P_SMLIMIT] = mbits, s.counter_limit, 1023
        P[K.P_SELECT], P[K.P_SSE] = int(s.mixer_contexts), int(s.sse)
        P[K.P_ORDERS:K.P_ORDERS + len(ctx)] = ctx
        F = np.zeros(K.F_LEN, np.float64)
        F[K.F_LR], F[K.F_LR_FINAL], F[K.F_BIAS] = s.lr, s.lr_final, s.bias
        self.P, self.F = P, F
        self.rates, self.ST, self.SQ = K.rate_table(), K.stretch_table(), K.squash_table()
        like = self._fresh(hbits, tbits, mbits)
        if arrays is None:
            self.a = like
        else:
            for k, v in like.items():
                got = arrays.get(k)
                if got is None or got.shape != v.shape or got.dtype != v.dtype:
                    raise DataError(f"session memory: array {k} is {None if got is None else (got.dtype, got.shape)}, "
                                    f"these settings need {(v.dtype, v.shape)}")
            self.a = {k: arrays[k] for k in like}

    def _fresh(self, hbits: int, tbits: int, mbits: int) -> dict[str, np.ndarray]:
        s = self.settings
        nb, nctx = s.nbits, len(s.contexts)
        na, nbs = K.n_sets(nb, nctx)
        W = np.zeros((na + nbs, K.n_inputs(nctx)), np.float64)
        W[:, 1] = 1.0  # an empty memory starts as the language model (up to the SSE map's 33-point grid)
        # ... and its mixers start with some trust in the memory's inputs, which are 0 until their tables learn:
        # a memory that has only absorbed a prompt (no scored text to learn its mixers from) already draws on it
        # (measured: held-out 0.932 vs 0.937 bpb alone, the first 1K tokens 2.23 vs 2.39; primed unchanged)
        W[:, 2:2 + nctx] = 0.2
        W[:, 2 + nctx:4 + nctx] = 0.5
        wf = np.zeros((nb, 3), np.float64)
        wf[:, :2] = 0.5
        return {"R": np.zeros(K.R_LEN, np.int64), "hist": np.zeros(1 << hbits, np.uint16),
                "hashes": np.zeros(nctx, np.uint64), "table": np.zeros((1 << tbits) * 16, np.uint16),
                "mt": np.zeros((2, 1 << mbits), np.int64),
                "sm": np.full(2 * K.N_LENB * nb * 2, K.NEUTRAL, np.uint32), "W": W, "wf": wf,
                "apm": np.tile(np.round(65535 / (1.0 + np.exp(-(np.arange(33) - 16) / 2.0))).astype(np.uint16),
                               na * 256)}

    # ----- reading and learning -----
    @property
    def symbols_seen(self) -> int:
        return int(self.a["R"][K.R_POS])

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.a.values())

    def _symbols(self, symbols) -> np.ndarray:
        syms = np.asarray(symbols, np.int64).reshape(-1)
        if syms.size and (syms.min() < 0 or syms.max() >= self.settings.vocab_size):
            raise ValueError(f"session memory: symbols outside 0..{self.settings.vocab_size - 1}")
        return syms

    def _run(self, mode, lm_st, lm_bits, probs, syms, learn, out):
        a = self.a
        return K.kernel(mode, self.P, self.F, a["R"], a["hist"], a["hashes"], a["table"], a["mt"], a["sm"], a["W"],
                        a["wf"], a["apm"], self.rates, self.ST, self.SQ, lm_st, lm_bits, probs, syms, learn, out)

    def score(self, lm_st: np.ndarray, lm_bits: np.ndarray, symbols, *, learn: bool = True) -> np.ndarray:
        """Bits of each symbol under the mixture (float64 [T]), each predicted before anything learned from it;
        then the memory learns it. `lm_st` [T, nbits] and `lm_bits` [T] come from `rwkvjax.memory.lm`."""
        syms = self._symbols(symbols)
        T = len(syms)
        lm_st = np.ascontiguousarray(lm_st, np.float32).reshape(T, self.settings.nbits)
        lm_bits = np.ascontiguousarray(lm_bits, np.float32).reshape(T)
        out = np.zeros(T, np.float64)
        if T:
            self._run(K.SCORE, lm_st, lm_bits, _PROBS0, syms, learn, out)
        return out

    def absorb(self, symbols) -> None:
        """Learn symbols the model has not scored (a prompt, primed history): tables and history, not mixers."""
        syms = self._symbols(symbols)
        if len(syms):
            self._run(K.ABSORB, _ST0, _BITS0, _PROBS0, syms, False, _OUT0)

    def distribution(self, probs_V: np.ndarray) -> np.ndarray:
        """The mixture's distribution of the next symbol [V] (float64, sums to 1) given the model's `probs_V`."""
        V = self.settings.vocab_size
        probs = np.ascontiguousarray(probs_V, np.float32).reshape(-1)
        if probs.shape[0] != V:
            raise ValueError(f"session memory: {probs.shape[0]} probabilities for a {V}-symbol vocabulary")
        out = np.zeros(V, np.float64)
        self._run(K.DIST, _ST0, _BITS0, probs, _SYMS0, False, out)
        return out

    def learn(self, symbol: int, probs_V: np.ndarray) -> float:
        """Learn one symbol that followed the model's `probs_V` (a generated or verified token); its bits under
        the mixture (~11 µs for bytes: the model's opinions along its path come from one pass over the leaves)."""
        probs = np.ascontiguousarray(probs_V, np.float32).reshape(-1)
        if probs.shape[0] != self.settings.vocab_size:
            raise ValueError(f"session memory: {probs.shape[0]} probabilities for a {self.settings.vocab_size}-symbol "
                             "vocabulary")
        symbol = int(self._symbols([symbol])[0])
        st = np.zeros((1, self.settings.nbits), np.float32)
        K.path_stretch_probs(probs, symbol, self.settings.nbits, st[0])
        p = float(probs[symbol])
        bits = np.asarray([-math.log2(p) if p > 0 else -1.0], np.float32)  # its surprise (-1: unknown)
        return float(self.score(st, bits, [symbol])[0])

    def draft(self, k: int) -> list[int]:
        """Up to k symbols the longest current match predicts next (empty when nothing matches)."""
        out = np.zeros(max(k, 0), np.int64)
        n = K.draft(self.P, self.a["R"], self.a["hist"], max(k, 0), out)
        return out[:n].tolist()

    def copy(self) -> "SessionMemory":
        return SessionMemory(self.settings, {k: v.copy() for k, v in self.a.items()})

    def stats(self) -> dict:
        """What `inspect` and the dashboard show: size, what it holds, and how full it is."""
        a, (hbits, tbits, _) = self.a, self.settings.sizes()
        used = int(np.count_nonzero(a["table"][::16]))
        return {"symbols_seen": self.symbols_seen, "history_symbols": min(self.symbols_seen, 1 << hbits),
                "history_capacity": 1 << hbits, "buckets_used": used, "buckets": 1 << tbits,
                "mb": round(self.nbytes / (1 << 20), 2), "memory_mb": self.settings.memory_mb}

    # ----- saving -----
    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able description, arrays): everything needed to restore this memory exactly."""
        return {"format": FORMAT, "settings": self.settings.to_json()}, dict(self.a)

    @staticmethod
    def from_state_dict(meta: dict, arrays: dict[str, np.ndarray], *, source: str = "session memory") \
            -> "SessionMemory":
        return SessionMemory(_settings_of(meta, source), {k: np.asarray(v) for k, v in arrays.items()})

    @staticmethod
    def empty_like(meta: dict, *, source: str = "session memory") -> "SessionMemory":
        """An empty memory with the settings `meta` describes (the template a saved one restores into)."""
        return SessionMemory(_settings_of(meta, source))

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file, written whole or not at all, owner-only (it holds the user's text)."""
        from safetensors.numpy import save as st_save

        from rwkvjax.atomic import atomic_write
        meta, arrays = self.state_dict()
        data = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                       metadata={"rwkvjax": json.dumps(meta)})
        atomic_write(path, data, private=True)

    @staticmethod
    def load(path: str | os.PathLike, *, private_copy: bool = False) -> "SessionMemory":
        """A memory from `save`. `private_copy`: the file is mapped copy-on-write, so learning in this copy
        never reaches the file or other copies, and only the pages it writes take memory (the server's
        per-request scratch memories)."""
        path = Path(path)
        if not path.is_file():
            raise MissingFile(f"{path}: no such session memory file")
        try:
            header, base = _safetensors_header(path)
            meta = json.loads(header.get("__metadata__", {}).get("rwkvjax", "{}"))
            arrays = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                lo, hi = info["data_offsets"]
                dtype = np.dtype(_ST_DTYPES[info["dtype"]])
                shape = tuple(info["shape"])
                if private_copy:
                    arrays[name] = np.memmap(path, dtype=dtype, mode="c", offset=base + lo, shape=shape)
                else:
                    with open(path, "rb") as f:
                        f.seek(base + lo)
                        arrays[name] = np.frombuffer(f.read(hi - lo), dtype=dtype).reshape(shape).copy()
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable session memory ({e}); remove it or restore it") from None
        return SessionMemory.from_state_dict(meta, arrays, source=str(path))


def _settings_of(meta: dict, source: str) -> MemorySettings:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{source}: not a session memory of this version (format {got!r}, expected {FORMAT!r})")
    try:
        return MemorySettings.from_json(meta["settings"])
    except (KeyError, TypeError) as e:
        raise DataError(f"{source}: the session memory's settings are unreadable ({e})") from None


_ST_DTYPES = {"U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "I64": np.int64, "F64": np.float64,
              "F32": np.float32, "I32": np.int32, "U8": np.uint8}


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts (the format's first 8 bytes are the
    header's length, little-endian: https://github.com/huggingface/safetensors#format)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n < 1 << 26:
            raise ValueError("bad header length")
        return json.loads(f.read(n)), 8 + n


def node_stretch_np(probs_V: np.ndarray, symbols: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Host twin of `rwkvjax.memory.lm.path_stretch` for one or a few rows of probabilities."""
    probs = np.asarray(probs_V, np.float64).reshape(len(symbols), -1)
    T, V = probs.shape
    full = np.zeros((T, 1 << nbits))
    full[:, :V] = probs
    st = np.zeros((T, nbits), np.float32)
    rows = np.arange(T)
    for k in range(nbits):
        sums = full.reshape(T, 2 << k, -1).sum(-1)
        pre = symbols >> (nbits - k)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.log(sums[rows, 2 * pre + 1]) - np.log(sums[rows, 2 * pre])
        st[:, k] = np.clip(np.nan_to_num(d, nan=0.0), -K.ST_CLIP, K.ST_CLIP)
    with np.errstate(divide="ignore"):
        bits = -np.log2(probs[rows, symbols])
    return st, bits.astype(np.float32)


# placeholders for the kernel arguments a mode does not read (one compiled signature for every mode)
_ST0 = np.zeros((1, 1), np.float32)
_BITS0 = np.zeros(1, np.float32)
_PROBS0 = np.zeros(1, np.float32)
_SYMS0 = np.zeros(1, np.int64)
_OUT0 = np.zeros(1, np.float64)
