"""Session memories in training: how `train` feeds them, and how a checkpoint stores them for every command.

A step of `train` holds its memories as the orbax item `memory` ({name: arrays}, saved and committed with the
step's other items) and their descriptions in the host JSON under `"memory"` ({name: meta}). The run's memory
is named `GLOBAL`; with `--state-scope per-project` each project's memory is stored under the project's name
(Claude Code project folders are named after a path, '-home-...', so none is called `GLOBAL`).

What `train` does with them (`RunMemory`, `MemoryHook`):

- every live window a step trains on (after ingestion's redaction and the update gate's screen) is scored by
  the mixture of the model read from the current start state and the memory, before the memory learns it
  (prequential), then learned; replayed windows are never learned again. With dynamic merges the memory works
  on base tokens: the window is expanded and read by the plain model from the same start state;
- with the update gate on, learning is part of the step's transaction: the gate probes the canaries with the
  model and a copy of the memory that has learned the step, and a veto undoes both;
- a window the memory has nearly all seen recently (a flood: one line repeated, a file re-read again and
  again) is not learned again (`FloodScreen`; the gate's own screen comes first when it is on);
- per project: the global memory learns every window of every project; a project's memory starts as a copy
  of the global one when the project first appears (as its start state starts from the global state) and then
  learns that project's windows only. Its mixture is the one scored and probed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import CheckpointMismatch, DataError
from rwkvjax.io.checkpoint import StatePart, TrainCheckpointer
from rwkvjax.memory.lm import path_stretch
from rwkvjax.memory.memory import MemorySettings, SessionMemory
from rwkvjax.merges.dyntok import expand
from rwkvjax.model.config import Architecture
from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits
from rwkvjax.model.units import LN2
from rwkvjax.model.wkv import WkvImpl
from rwkvjax.train.data import Window, base_per_window
from rwkvjax.train.loop import Hook, StepInfo
from rwkvjax.train.objective import HEAD_CHUNK, _from_chunks, _to_chunks
from rwkvjax.train.trainable import Trainable, initial_state

log = logging.getLogger(__name__)

ITEM = "memory"
SCREEN_ITEM = "memory_screen"  # the flood screen's table (`train` only)
GLOBAL = "_run"


# ----- the checkpoint layout (read by generate, score and serve too) -----

def memory_tree(memories: dict[str, SessionMemory]) -> tuple[dict, dict]:
    """(host JSON entry, orbax array tree) of the named memories."""
    metas, trees = {}, {}
    for name, mem in memories.items():
        metas[name], trees[name] = mem.state_dict()
    return metas, trees


def memory_like(metas: dict) -> dict:
    """The array tree a step's memories restore into (shapes and dtypes from their descriptions)."""
    return {name: SessionMemory.empty_like(meta, source="checkpoint").state_dict()[1] for name, meta in metas.items()}


def restore_memories(ckpt: TrainCheckpointer, step: int, host: dict) -> dict[str, SessionMemory]:
    """The memories saved in `step` (empty when the step has none: a run without a memory, or an older one)."""
    metas = host.get(ITEM) or {}
    if not metas:
        return {}
    trees = ckpt.restore_extra(step, {ITEM: memory_like(metas)})[ITEM]
    return {name: SessionMemory.from_state_dict(metas[name], trees[name], source=f"{ckpt.directory} step {step}")
            for name in metas}


def checkpoint_memory(ckpt_dir: str | os.PathLike, name: str = GLOBAL) -> SessionMemory | None:
    """The memory `name` of the newest intact step of a `train` folder, or None when the run kept none."""
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        found = ck.newest_intact(lambda s: restore_memories(ck, s, ck.restore_host(s)))
    if found is None:
        return None
    return found[1].get(name)


# ----- the model's opinion, on device -----

def _head_paths(params, hidden_BTC, targets_BT, nbits: int):
    """(st [B,T,nbits], NLL [B,T] nats) of the targets under the head, a time chunk at a time: [B,T,V] logits
    never exist at once (65,536-id vocabularies)."""
    T = hidden_BTC.shape[1]
    chunk = min(HEAD_CHUNK, T)
    st, nll = jax.lax.map(lambda xs: path_stretch(head_logits(params, xs[0]), xs[1], nbits),
                          (_to_chunks(hidden_BTC, chunk), _to_chunks(targets_BT, chunk)))
    return _from_chunks(st, T), _from_chunks(nll, T)


head_paths = jax.jit(_head_paths, static_argnames=("nbits",))


def local(tree):
    """This process's copy of arrays replicated over several processes (its first device's shard): each process
    scores its own windows with its own memory, outside the data-parallel step."""
    one = lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) and not x.is_fully_addressable else x
    return jax.tree.map(one, tree)


@functools.partial(jax.jit, static_argnames=("config", "nbits"))
def _window_paths(params, trainable: Trainable, inputs_BT, targets_BT, *, config: Architecture, nbits: int):
    hidden, _ = forward_hidden(params, embed(params, inputs_BT), initial_state(trainable, inputs_BT.shape[0]),
                               config=config, wkv_impl=WkvImpl.AUTO)
    return _head_paths(params, hidden, targets_BT, nbits)


def window_paths(params, config: Architecture, trainable: Trainable, windows: list[np.ndarray], *, rows: int,
                 length: int, nbits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(st [n, nbits], bits [n]) of each token sequence, each read from the start state `trainable` as a
    training window is (input 0, then its tokens). Padded to one [rows, length] batch: one compiled shape."""
    if len(windows) > rows or any(len(w) > length for w in windows):
        raise ValueError(f"window_paths: {len(windows)} windows of up to {max(map(len, windows))} tokens do not fit "
                         f"[{rows}, {length}]")
    inputs = np.zeros((rows, length), np.int32)
    targets = np.zeros((rows, length), np.int32)
    for i, ids in enumerate(windows):
        targets[i, :len(ids)] = ids
        inputs[i, 1:len(ids)] = ids[:-1]
    plain = local(dataclasses.replace(trainable, hyper=None))  # the plain model: base tokens, no hypernetwork
    st, nll = _window_paths(local(params), plain, jnp.asarray(inputs), jnp.asarray(targets), config=config,
                            nbits=nbits)
    st, nll = np.asarray(st), np.asarray(nll, np.float64)
    return [(st[i, :len(ids)], nll[i, :len(ids)] / LN2) for i, ids in enumerate(windows)]


def copy_into(dst: SessionMemory, src: SessionMemory) -> SessionMemory:
    """`src`'s exact state written into `dst` (same settings): a copy without allocating, so the per-step
    copies (undo, canary probe) reuse the same pages instead of faulting in fresh ones (measured: 9 ms against
    90 ms for a fresh 32 MB copy on the 2-core CPU)."""
    a, b = dst.state_dict()[1], src.state_dict()[1]
    for k, v in b.items():
        np.copyto(a[k], v)
    return dst


# ----- the flood screen -----

_K1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finaliser (Steele, Lea, Flood, OOPSLA 2014)
_K2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x100000001B3)    # the FNV-1 64-bit prime, as the base of a polynomial hash


def _finalise(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _K1
    x = x ^ (x >> np.uint64(27))
    x = x * _K2
    return x ^ (x >> np.uint64(31))


class FloodScreen:
    """Keeps floods out of the memory: a window whose n-grams (about 32 bytes each) the memory has nearly all
    seen recently, within the window or before it (one line repeated, a file re-read again and again), is not
    learned again; the text it repeats is still in the memory's history, so nothing is lost.

    Measured (benchmarks/redteam.py, "flood"; benchmarks/RESULTS.md, "Red team"): a 60 KB file read 50 times in
    a row fills the history ring and makes the counters overconfident, +0.25 bits/byte (+23%) on the clean text
    after it; the update gate's screen remembers 64 windows (32 KB of bytes) and lets such re-reads through. With
    this screen the flood costs what reading the file once does (+0.018). It remembers the n-grams of about half
    the memory's history ring, in a direct-mapped table of 32-bit fingerprints (a newer n-gram takes
    an older one's slot), so what it calls a repeat is still in the ring with near certainty.
    """

    def __init__(self, n: int, log2_size: int, redundant: float = 0.9, table: np.ndarray | None = None):
        self.n, self.redundant, self.log2_size = n, redundant, log2_size
        self.table = np.zeros(1 << log2_size, np.uint32) if table is None else table
        if self.table.shape != (1 << log2_size,) or self.table.dtype != np.uint32:
            raise DataError(f"flood screen: table of {self.table.dtype} {self.table.shape}, expected uint32 "
                            f"({1 << log2_size},)")
        self._pow = _BASE ** np.arange(n, dtype=np.uint64)  # wraps modulo 2^64, as the hash means to
        self._journal: list[tuple[np.ndarray, np.ndarray]] = []  # (slots, their tags before) since `begin`

    @staticmethod
    def for_memory(settings: MemorySettings, redundant: float = 0.9) -> "FloodScreen":
        n = 32 if settings.vocab_size <= 256 else 8  # about 32 bytes: a World token is ~4 bytes
        return FloodScreen(n, max(settings.sizes()[0] - 1, 8), redundant)

    def fingerprints(self, ids) -> np.ndarray:
        """Distinct 64-bit fingerprints of the window's n-grams (the whole window when it is shorter)."""
        u = np.asarray(ids, np.uint64) + np.uint64(1)
        if len(u) < self.n:
            u = np.concatenate([u, np.zeros(self.n - len(u), np.uint64)])
        grams = np.lib.stride_tricks.sliding_window_view(u, self.n)
        with np.errstate(over="ignore"):
            return np.unique(_finalise(grams @ self._pow))

    def check(self, ids) -> str | None:
        """The reason not to learn `ids` (None: it brings new text); its n-grams are remembered either way."""
        fp = self.fingerprints(ids)
        slot = (fp >> np.uint64(64 - self.log2_size)).astype(np.int64)
        tag = (fp & np.uint64(0xFFFFFFFF)).astype(np.uint32) | np.uint32(1)  # 0 marks an empty slot
        old = self.table[slot]
        new = int(np.count_nonzero(old != tag))
        self._journal.append((slot, old))
        self.table[slot] = tag
        total = max(len(ids) - self.n + 1, 1)
        if 1 - new / total >= self.redundant:
            return (f"flood: {new} of its {total} {self.n}-grams are new to the session memory (repeats within it "
                    "or of recent text)")
        return None

    def begin(self) -> None:
        """A step starts: `rollback` undoes what `check` remembers from here on (a vetoed step's windows are
        dropped; were their n-grams kept, a later copy of that text would be taken for a repeat)."""
        self._journal = []

    def rollback(self) -> None:
        for slot, old in reversed(self._journal):
            self.table[slot] = old
        self._journal = []

    def meta(self) -> dict:
        return {"n": self.n, "log2_size": self.log2_size, "redundant": self.redundant}


# ----- the run's memories -----

@dataclasses.dataclass
class Pending:
    """A step's live windows as the memory will learn them, with the model's opinion measured before the update."""

    windows: list[Window]
    ids: list[np.ndarray]          # base tokens of each window
    paths: list[tuple[np.ndarray, np.ndarray]]  # (st, bits) of each
    screened: list[dict]           # windows the memory's flood screen skipped
    seconds: float


class RunMemory(StatePart):
    """The run's session memories: `GLOBAL` and, per project, one each; which one the learner's state mixes with
    (`current`); per-step scoring and learning; the copies an undo and the canary probe need.

    A checkpoint part: items `memory` (the memories) and `memory_screen` (the flood screen's table), host entries
    `memory` (their descriptions) and `memory_run`; a step from before the memory resumes with an empty one."""

    def __init__(self, settings: MemorySettings, *, config: Architecture, params, ctx_len: int, live_per_step: int,
                 merges: bool, per_project: bool, screen: FloodScreen | None = None):
        if settings.vocab_size != config.vocab_size:
            raise DataError(f"session memory for {settings.vocab_size} symbols, model vocabulary {config.vocab_size}")
        self.settings, self.config, self.params = settings, config, params
        self.per_project, self.merges, self.screen = per_project, merges, screen
        self.rows = live_per_step
        self.length = ctx_len if not merges else base_per_window(ctx_len, True)  # a unit covers at most 2 tokens
        self.memories: dict[str, SessionMemory] = {GLOBAL: SessionMemory(settings)}
        self.current = GLOBAL
        self.pending: Pending | None = None
        self._spares: list[SessionMemory] = []         # reused copies: undo of each memory a step learns
        self._undo: list[tuple[str, int]] = []         # (memory name, spare holding it as it was)
        self._probe_copy: SessionMemory | None = None  # the canary probe's scratch memory

    @property
    def memory(self) -> SessionMemory:
        """The memory mixed with the learner's current start state."""
        return self.memories[self.current]

    def switch(self, project: str) -> None:
        """The learner now holds `project`'s state: its memory (a copy of the global one when it is new)."""
        if not self.per_project:
            return
        if project not in self.memories:
            self.memories[project] = self.memories[GLOBAL].copy()
        self.current = project

    def base_ids(self, w: Window) -> np.ndarray:
        ids = w.units if w.slots is None else expand(w.units, w.slots, self.config.vocab_size)
        return np.asarray(ids, np.int64)

    # ----- a step: measure before the update, learn after it -----
    def prepare(self, live: list[Window], trainable: Trainable) -> None:
        """The model's opinion of the live windows under the start state before the step's update."""
        t0 = time.perf_counter()
        keep, ids, screened = [], [], []
        if self.screen is not None:
            self.screen.begin()
        for w in live:
            b = self.base_ids(w)
            reason = None if self.screen is None else self.screen.check(b)
            if reason is not None:
                screened.append({"session": w.session, "reason": reason})
                continue
            keep.append(w)
            ids.append(b)
        paths = window_paths(self.params, self.config, trainable, ids, rows=self.rows, length=self.length,
                             nbits=self.settings.nbits) if ids else []
        self.pending = Pending(keep, ids, paths, screened, time.perf_counter() - t0)

    def learn(self, *, undoable: bool) -> dict:
        """Score the pending windows with the current memory (then it learns them), and the global memory too
        when that is another one; the record's fields. `undoable`: keep copies so that `undo` can restore."""
        p, self.pending = self.pending, None
        if p is None:
            raise RuntimeError("RunMemory.learn: no pending windows (prepare() was not called for this step)")
        t0 = time.perf_counter()
        names = [self.current] + ([GLOBAL] if self.current != GLOBAL else [])
        self._undo = []
        if undoable:
            for i, name in enumerate(names):
                if i == len(self._spares):
                    self._spares.append(SessionMemory(self.settings))
                copy_into(self._spares[i], self.memories[name])
                self._undo.append((name, i))
        nbytes = sum(w.nbytes for w in p.windows)
        bits = {}
        for name in names:
            mem = self.memories[name]
            bits[name] = sum(float(mem.score(st, b, ids).sum()) for ids, (st, b) in zip(p.ids, p.paths))
        lm = sum(float(b.sum()) for _, b in p.paths)
        rec = {"memory_live_bpb": bits[self.current] / nbytes if nbytes else None,
               "memory_lm_bpb": lm / nbytes if nbytes else None,
               "memory_windows": len(p.windows), "memory_symbols": sum(len(i) for i in p.ids),
               "memory": self.memory.stats(),
               "memory_s": p.seconds + time.perf_counter() - t0}
        if self.per_project:
            rec["memory_global_live_bpb"] = bits[GLOBAL] / nbytes if nbytes else None
        if p.screened:
            rec["memory_screened"] = p.screened
        return rec

    def undo(self) -> None:
        """Back to the memories as they were before the last `learn` (which must have been undoable)."""
        for name, i in self._undo:
            self.memories[name], self._spares[i] = self._spares[i], self.memories[name]
        self._undo = []
        if self.screen is not None:
            self.screen.rollback()

    def before(self) -> SessionMemory:
        """The current memory as the step in flight found it (before `learn`, while it can be undone)."""
        for name, i in self._undo:
            if name == self.current:
                return self._spares[i]
        return self.memory

    # ----- the update gate's canary probe -----
    def probe_bits(self, hidden_BTC, targets_BT, lengths, memory: SessionMemory | None = None) -> np.ndarray:
        """Mixture bits of each row of a probe batch (the canaries, read in order as one history), from the
        model's final hidden states, with a copy of `memory` (default: the current one): the canaries are never
        learned by the memory itself."""
        mem = memory if memory is not None else self.memory
        if self._probe_copy is None:
            self._probe_copy = SessionMemory(self.settings)
        scratch = copy_into(self._probe_copy, mem)
        st, nll = head_paths(local(self.params), local(hidden_BTC), local(targets_BT), nbits=self.settings.nbits)
        st, bits_lm, targets = np.asarray(st), np.asarray(nll, np.float64) / LN2, np.asarray(targets_BT)
        out = np.zeros(len(lengths))
        for i, n in enumerate(np.asarray(lengths, np.int64)):
            out[i] = scratch.score(st[i, :n], bits_lm[i, :n], targets[i, :n]).sum()
        return out

    # ----- checkpoint -----
    def tree(self) -> tuple[dict, dict]:
        return memory_tree(self.memories)

    def extra_items(self) -> dict:
        """The orbax items a step saves: the memories, and the flood screen's table."""
        items = {ITEM: self.tree()[1]}
        if self.screen is not None:
            items[SCREEN_ITEM] = {"table": self.screen.table}
        return items

    def host_state(self) -> dict:
        return {"current": self.current, "stats": {n: m.stats() for n, m in self.memories.items()},
                "screen": None if self.screen is None else self.screen.meta()}

    def checkpoint_host(self) -> dict:
        return {ITEM: self.tree()[0], "memory_run": self.host_state()}

    def checkpoint_arrays(self) -> dict:
        return self.extra_items()

    def arrays_like(self, host: dict) -> dict:
        """The memories, and the flood screen's table (nothing: a step from before the memory)."""
        metas = host.get(ITEM) or {}
        if not metas:
            return {}
        like = {ITEM: memory_like(metas)}
        meta = (host.get("memory_run") or {}).get("screen")
        if meta is not None:
            like[SCREEN_ITEM] = {"table": np.zeros(1 << meta["log2_size"], np.uint32)}
        return like

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        source = f"checkpoint step {host['step']}"
        if ITEM not in arrays:
            log.warning("%s holds no session memory (saved before the memory existed); the memory starts empty "
                        "here and learns from the windows after it", source)
            return
        metas = host[ITEM]
        memories = {name: SessionMemory.from_state_dict(metas[name], arrays[ITEM][name], source=source)
                    for name in metas}
        table = arrays[SCREEN_ITEM]["table"] if SCREEN_ITEM in arrays else None
        self.load(memories, table, host.get("memory_run"), source=source)

    def load(self, memories: dict[str, SessionMemory], table: np.ndarray | None, host: dict | None,
             source: str) -> None:
        """Resume from a checkpoint's memories and flood screen (`host`: the "memory_run" entry of its host
        JSON)."""
        if GLOBAL not in memories:
            raise DataError(f"{source}: the checkpoint's memories lack the run's memory {GLOBAL!r}")
        for name, mem in memories.items():
            if mem.settings != self.settings:
                raise CheckpointMismatch(f"{source}: session memory {name!r} was built with other settings "
                                         f"({mem.settings.to_json()}); resume with the run's --memory-mb "
                                         f"{mem.settings.memory_mb:g}, or start a new --ckpt-dir")
        self.memories = dict(memories)
        host = host or {}
        self.current = host.get("current") or GLOBAL
        if self.current not in self.memories:
            raise DataError(f"{source}: the checkpoint names memory {self.current!r} current but holds none")
        meta = host.get("screen")
        if self.screen is not None and meta is not None:
            if meta != self.screen.meta():
                raise CheckpointMismatch(f"{source}: the flood screen was {meta}, this run's is {self.screen.meta()}")
            self.screen.table = np.array(table, np.uint32)  # a writable copy


class MemoryHook(Hook):
    """Learns each step's pending windows into the run's memories and adds the figures to the record.

    Registered before the update gate when there is one (`transactional`): the gate then probes the canaries
    with the memory that learned the step, and a veto undoes the learning with the step."""

    def __init__(self, memory: RunMemory, *, transactional: bool):
        self.memory = memory
        self.may_veto = transactional

    def after_step(self, info: StepInfo):
        info.record.update(self.memory.learn(undoable=self.may_veto))
        return None

    def undo(self, info: StepInfo) -> None:
        self.memory.undo()
        info.record["memory"] = self.memory.memory.stats()
