"""Named states: a folder where every tuned start state has an id, a name, a parent and its provenance.

Layout: `<id>.safetensors` (tensor `wkv` [L,H,N,N] float32, optional `att_shift`/`ffn_shift` [L,C]) next to
`<id>.json` (the record), and `<id>.memory.safetensors` when the state brings a session memory (its arrays and,
in the metadata, its description: `rwkvjax.memory.memory.SessionMemory.save`; owner-only, it holds the user's
text). Names are unique in a store: `base` (the model's own zero state, never stored),
`<project>`, `<project>/<session>`, or free text. Every write is atomic (temporary file, then rename; the
record last), so a reader (the server) never sees half a state, and a new state is visible at once.
A state belongs to one base model (its parameter hash) and tokenizer; using it with another is refused.

Every read-modify-write (put, fork, remove) holds an exclusive `fcntl.flock` on `<store>/.store.lock`, so two
writers (a training run, the server, the CLI) never make one name twice nor write the same files at once;
readers take no lock. A record file that cannot be read is skipped with one warning (the rest of the store stays
usable), and a record's id must have the form the store generates (it names files: `../x` must reach nothing).
Names are checked once, when a state is written: parts of letters, digits and `. _ - + @` between '/', no `.`/`..`
part, never `base` nor `base/...`. The conversation namespace `conv/...` (`conv/<model>/<session>`) is the
server's test-time training's alone: only a write that says so (`put(..., conversation=True)`) goes there, and such
a write goes nowhere else, so no conversation can replace a state it did not make, nor any other writer take one.

The index (every record) is read once and kept: a lookup (the server's, for every request naming a state) reads
no record again until the store changes, which it tells by the folder's mtime (a record renamed in or removed by
anything) and by `.generation`, a counter every write through a store bumps under the lock (two writes in one
tick of the file system's clock leave the folder's mtime as it was).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_path, atomic_write
from rwkvjax.errors import CannotWrite, CheckpointMismatch, ConfigError, DataError, MissingFile

BASE = "base"
CONVERSATIONS = "conv"  # the server's --ttt conversations: `conv/<model>/<session>`, written by nothing else
_NAME = re.compile(r"^[\w.@+-]+(/[\w.@+-]+)*$")
_ID = re.compile(r"^[0-9a-f]{12}$")  # `uuid4().hex[:12]`: the only ids the store makes, and the only ones it reads
LOCK_NAME = ".store.lock"  # not `.lock`: a run's RunLock (held for hours) may share a folder with a store
LISTED = 10  # at most this many names in one error message (a store may hold thousands of conversations)
GENERATION = ".generation"  # bumped by every write: a cached index is stale when it changes

log = logging.getLogger(__name__)


class UnknownState(MissingFile):
    """No state of that name or id in the store."""


@dataclasses.dataclass(frozen=True)
class StateRecord:
    id: str
    name: str
    parent: str | None          # id of the state it was forked or trained from
    base_hash: str              # `params_hash` of the base model
    tokenizer: str              # `text.tokenizer.tokenizer_id` of the base model's tokenizer
    shape: tuple[int, ...]      # [L, H, N, N]
    created: float
    hypernet: str | None = None  # hash of the hypernetwork file trained with it, if any
    source: dict | None = None   # where it came from: {"checkpoint": dir, "step": n} or {"file": path} or {"fork": id}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d


def check_name(name: str, *, conversation: bool = False) -> str:
    """`name` if a state may be stored under it. `conversation`: the writer is the server's test-time training,
    the only one allowed in the namespace `conv/...`, and allowed nowhere else."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 200:
        raise ConfigError(f"state name {str(name)[:80]!r}: use letters, digits, . _ - + @ and '/' between parts")
    parts = name.split("/")
    if any(p in (".", "..") for p in parts):
        raise ConfigError(f"state name {name!r}: '.' and '..' are not names")
    if name == BASE:
        raise ConfigError(f"state name {name!r}: '{BASE}' is the model's own start state")
    if parts[0] == BASE:
        raise ConfigError(f"state name {name!r}: '{BASE}/...' would read as the model's own start state; "
                          "choose another name")
    if conversation and (parts[0] != CONVERSATIONS or len(parts) < 2):
        raise ConfigError(f"state name {name!r}: a conversation's state is named '{CONVERSATIONS}/...'")
    if not conversation and parts[0] == CONVERSATIONS:
        raise ConfigError(f"state name {name!r}: '{CONVERSATIONS}' and '{CONVERSATIONS}/...' are where the server "
                          "keeps its conversations; choose another name")
    if _ID.match(name):
        raise ConfigError(f"state name {name!r}: it has the form of a state id; choose another name")
    return name


def conversation_name(model: str, session: str) -> str:
    """The state name of conversation `session` started from state `model` (`base`: the model's own)."""
    return f"{CONVERSATIONS}/{model}/{session}"


class StateStore:
    def __init__(self, root: str | os.PathLike, *, create: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            if not create:
                raise MissingFile(f"{self.root}: no such states folder")
            self.root.mkdir(parents=True, exist_ok=True)
        self._warned: set[tuple[str, int, int]] = set()  # (file, mtime, size) of unreadable records already reported
        # flock excludes other processes (and other StateStore objects); within one object, threads take turns
        # on this lock and a nested write (fork -> put) reuses the flock its caller holds
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._index: tuple[tuple, list[StateRecord]] | None = None  # (the stamp it was read at, the records)
        self._index_lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self):
        """Hold the store's write lock (blocking until other writers are done); re-entrant in one object."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:  # a read-only or foreign folder: one line, not a traceback
                raise CannotWrite(f"{self.root}: the states folder cannot be written ({e.strerror}); "
                                  "choose a folder you can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies holding it
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)  # closing the descriptor drops the lock

    # ----- reading -----
    def records(self) -> list[StateRecord]:
        """Every readable record, oldest first; from the cached index while the store is unchanged."""
        stamp = self._stamp()  # taken before the scan: a write during it changes the stamp, so the next call rescans
        with self._index_lock:
            if self._index is not None and self._index[0] == stamp:
                return list(self._index[1])
        recs = self._scan()
        with self._index_lock:
            self._index = (stamp, recs)
        return list(recs)

    def _stamp(self) -> tuple:
        try:
            generation = (self.root / GENERATION).read_bytes()
        except FileNotFoundError:
            generation = b""
        st = os.stat(self.root)
        return st.st_mtime_ns, st.st_ino, generation

    def _changed(self) -> None:
        """After a write (the lock held): this object's index is dropped and every other store's goes stale."""
        with self._index_lock:
            self._index = None
        path = self.root / GENERATION
        # written in place, fixed width, without a rename or fsync: a hint for readers' caches, not data to keep
        # (a torn or lost value only makes a reader scan again); the lock makes this the only writer
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                old = os.pread(fd, 64, 0).strip()
                n = int(old) if old.isdigit() else 0
                os.pwrite(fd, b"%020d" % (n + 1), 0)
            finally:
                os.close(fd)
        except OSError as e:  # the write itself is done; other readers still see the folder's mtime
            log.warning("%s: the store's generation could not be bumped (%s)", path, e)

    def _scan(self) -> list[StateRecord]:
        out = []
        for f in sorted(self.root.glob("*.json")):
            rec = self._read_record(f)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: (r.created, r.name))

    def _read_record(self, f: Path) -> StateRecord | None:
        """The record in `f`, or None (with one warning per version of the file) when it is not one."""
        st = None
        try:
            st = f.stat()
            d = json.loads(f.read_bytes())
            if not isinstance(d, dict):
                raise TypeError(f"a JSON {type(d).__name__}, not an object")
            rec = StateRecord(**{**d, "shape": tuple(int(x) for x in d["shape"])})
            if not isinstance(rec.id, str) or not _ID.match(rec.id) or f.name != f"{rec.id}.json":
                raise ValueError(f"id {str(rec.id)[:40]!r} is not the id its file name {f.name!r} gives")
            if not isinstance(rec.name, str) or not isinstance(rec.base_hash, str):
                raise TypeError("name and base_hash must be strings")
            if rec.parent is not None and not isinstance(rec.parent, str):
                raise TypeError("parent must be a string id")
            return rec
        except FileNotFoundError:
            return None  # removed between the listing and the read: a concurrent `rm`, not damage
        except (OSError, ValueError, TypeError, KeyError) as e:  # JSON and Unicode errors are ValueErrors
            key = (f.name, st.st_mtime_ns, st.st_size) if st is not None else (f.name, 0, 0)
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: not a state record, skipped (%s); remove the file or restore it", f,
                            str(e)[:200])
            return None

    def get(self, name_or_id: str) -> StateRecord:
        recs = self.records()
        for r in recs:
            if name_or_id in (r.name, r.id):
                return r
        raise UnknownState(f"{self.root}: no state named {str(name_or_id)[:200]!r} (states: "
                           f"{_listed([r.name for r in recs])}; `{BASE}` is the model's own start state)")

    def arrays(self, rec: StateRecord) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file
        path = self.root / f"{rec.id}.safetensors"
        if not path.is_file():
            raise DataError(f"{path}: the tensors of state {rec.name!r} are missing")
        return {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}

    def load(self, name_or_id: str, *, base_hash: str, tokenizer: str) -> tuple[StateRecord, dict[str, np.ndarray]]:
        """A state for use with a base model: refused when it was made for another one."""
        rec = self.get(name_or_id)
        check_compatible(rec, base_hash, tokenizer, self.root)
        return rec, self.arrays(rec)

    def children(self, rec: StateRecord) -> list[StateRecord]:
        return [r for r in self.records() if r.parent == rec.id]

    def descendants(self, rec: StateRecord) -> list[StateRecord]:
        """Every state forked or trained from `rec`, at any depth, children before their own children."""
        by_parent: dict[str, list[StateRecord]] = {}
        for r in self.records():
            if r.parent is not None:
                by_parent.setdefault(r.parent, []).append(r)
        out, seen, frontier = [], {rec.id}, [rec.id]
        while frontier:
            kids = [r for pid in frontier for r in by_parent.get(pid, ()) if r.id not in seen]
            seen.update(r.id for r in kids)
            out.extend(kids)
            frontier = [r.id for r in kids]
        return out

    def lineage(self, rec: StateRecord) -> list[StateRecord]:
        """The record and its ancestors, newest first (ancestors removed from the store end the chain)."""
        by_id = {r.id: r for r in self.records()}
        chain, seen = [rec], {rec.id}
        while chain[-1].parent in by_id and chain[-1].parent not in seen:
            chain.append(by_id[chain[-1].parent])
            seen.add(chain[-1].id)
        return chain

    # ----- writing -----
    def put(self, name: str, wkv: np.ndarray, *, base_hash: str, tokenizer: str, parent: str | None = None,
            hypernet: str | None = None, source: dict | None = None, att_shift: np.ndarray | None = None,
            ffn_shift: np.ndarray | None = None, replace: bool = False, memory=None,
            conversation: bool = False) -> StateRecord:
        """Store a state under `name`. With `replace`, a state of that name (same base model) is overwritten
        in place (its id stays, the previous one is its parent); otherwise the name must be new.

        `memory`: a session memory (anything with `save(path)`) stored with the state; None removes a stored one
        when the state is replaced (the state is then exactly what was given). `conversation`: the writer is the
        server's test-time training, whose names are `conv/...` and nothing else (`check_name`)."""
        check_name(name, conversation=conversation)
        wkv = np.asarray(wkv, np.float32)
        if wkv.ndim != 4 or wkv.shape[2] != wkv.shape[3]:
            raise DataError(f"state {name!r}: wkv must be [L, H, N, N], got {wkv.shape}")
        if not np.isfinite(wkv).all():
            raise DataError(f"state {name!r}: wkv holds non-finite values; refused")
        with self.locked():  # the name's check and the write are one step for every other writer
            return self._put(name, wkv, base_hash=base_hash, tokenizer=tokenizer, parent=parent, hypernet=hypernet,
                             source=source, att_shift=att_shift, ffn_shift=ffn_shift, replace=replace,
                             memory=memory)

    def _put(self, name, wkv, *, base_hash, tokenizer, parent, hypernet, source, att_shift, ffn_shift, replace,
             memory) -> StateRecord:
        from safetensors.numpy import save_file
        old = next((r for r in self.records() if r.name == name), None)
        if old is not None and not replace:
            raise ConfigError(f"{self.root}: a state named {name!r} exists (id {old.id}); choose another name or "
                              "remove it first")
        if old is not None:
            check_compatible(old, base_hash, tokenizer, self.root)
        sid = old.id if old is not None else uuid.uuid4().hex[:12]
        rec = StateRecord(id=sid, name=name, parent=parent if old is None else (parent or old.parent),
                          base_hash=base_hash, tokenizer=tokenizer, shape=tuple(wkv.shape), created=time.time(),
                          hypernet=hypernet, source=source)
        tensors = {"wkv": np.ascontiguousarray(wkv)}
        for k, v in (("att_shift", att_shift), ("ffn_shift", ffn_shift)):
            if v is not None:
                tensors[k] = np.ascontiguousarray(np.asarray(v, np.float32))
        mem = self.root / f"{sid}.memory.safetensors"
        try:
            # owner-only, like the store's records: a state is distilled from the user's sessions (`state export`
            # writes the shareable copy)
            with atomic_path(self.root / f"{sid}.safetensors", private=True) as tmp:
                save_file(tensors, str(tmp))
            if memory is not None:
                memory.save(mem)  # written whole before the record points at it
            else:
                mem.unlink(missing_ok=True)
            self._write_record(rec)
        except BaseException:
            if old is None:  # a new state cut short (a full disk): none of its files stays behind without a record
                for f in (self.root / f"{sid}.safetensors", mem):
                    f.unlink(missing_ok=True)
            raise
        self._changed()
        return rec

    def memory_file(self, rec: StateRecord) -> Path | None:
        """The session memory stored with a state, or None when it has none."""
        path = self.root / f"{rec.id}.memory.safetensors"
        return path if path.is_file() else None

    def _write_record(self, rec: StateRecord) -> None:
        atomic_write(self.root / f"{rec.id}.json", json.dumps(rec.to_json(), indent=1).encode(), private=True)

    def fork(self, src: str, name: str, *, base_hash: str | None = None) -> StateRecord:
        """A copy of `src` under a new name, with `src` as its parent; onto the same base model only."""
        check_name(name)
        with self.locked():  # the source cannot be removed or replaced while it is copied
            rec = self.get(src)
            if base_hash is not None and base_hash != rec.base_hash:
                raise CheckpointMismatch(f"state {rec.name!r} was tuned for base model {rec.base_hash}; it cannot "
                                         f"be forked onto model {base_hash} (a state means nothing to another model)")
            arr = self.arrays(rec)
            src_mem = self.memory_file(rec)
            return self.put(name, arr["wkv"], base_hash=rec.base_hash, tokenizer=rec.tokenizer, parent=rec.id,
                            hypernet=rec.hypernet, source={"fork": rec.id}, att_shift=arr.get("att_shift"),
                            ffn_shift=arr.get("ffn_shift"), memory=None if src_mem is None else _FileCopy(src_mem))

    def remove(self, name_or_id: str, *, recursive: bool = False) -> list[StateRecord]:
        """Remove a state -> the records removed. A state with children is refused (they would name a parent
        that is gone) unless `recursive`, which removes the whole subtree, deepest states first (an interrupted
        removal leaves no state whose parent is missing)."""
        with self.locked():
            rec = self.get(name_or_id)
            below = self.descendants(rec)
            if below and not recursive:
                raise ConfigError(f"state {rec.name!r} has {len(below)} state(s) forked from it "
                                  f"({_listed([r.name for r in below])}); remove them first, or remove the "
                                  "whole subtree with --recursive")
            gone = [*reversed(below), rec]
            self._unlink(gone)
            return gone

    def evict_conversations(self, cap: int, *, keep: str | None = None) -> list[StateRecord]:
        """Remove the least recently written conversation states (`conv/...`) beyond `cap` -> the records removed.
        `keep` (the conversation just written) and conversations a state was forked from (their forks name them)
        stay. Under the lock: no writer sees a half-removed state."""
        with self.locked():
            recs = self.records()
            convs = [r for r in recs if r.name.split("/", 1)[0] == CONVERSATIONS]
            if len(convs) <= cap:
                return []
            parents = {r.parent for r in recs}
            candidates = sorted((r for r in convs if r.name != keep and r.id not in parents), key=lambda r: r.created)
            gone = candidates[:len(convs) - cap]
            self._unlink(gone)
            return gone

    def _unlink(self, gone: list[StateRecord]) -> None:
        """Remove the files of `gone` (the lock held), children before parents as given."""
        if not gone:
            return
        for r in gone:  # ids come from validated records: each names files in this folder only
            (self.root / f"{r.id}.json").unlink(missing_ok=True)  # the record first: the state is gone at once
            (self.root / f"{r.id}.safetensors").unlink(missing_ok=True)
            (self.root / f"{r.id}.memory.safetensors").unlink(missing_ok=True)
        self._changed()


def _listed(names: list[str]) -> str:
    """Names for an error message, at most `LISTED` of them."""
    if not names:
        return "none"
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


class _FileCopy:
    """A stored memory file, saved elsewhere as it is (a fork's copy of its parent's memory)."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, path) -> None:
        atomic_write(path, self.path.read_bytes(), private=True)


def check_compatible(rec: StateRecord, base_hash: str, tokenizer: str, where) -> None:
    if rec.base_hash != base_hash:
        raise CheckpointMismatch(f"{where}: state {rec.name!r} was tuned for base model {rec.base_hash}, the loaded "
                                 f"model is {base_hash}; use the model it was trained with")
    if rec.tokenizer != tokenizer:
        raise CheckpointMismatch(f"{where}: state {rec.name!r} was made with tokenizer {rec.tokenizer}, the model "
                                 f"uses {tokenizer}")
