"""Named states: a folder where every tuned start state has an id, a name, a parent and its provenance.

Layout: `<id>.safetensors` (tensor `wkv` [L,H,N,N] float32, optional `att_shift`/`ffn_shift` [L,C]) next to
`<id>.json` (the record), and `<id>.memory.safetensors` when the state brings a session memory (its arrays and,
in the metadata, its description: `rwkvjax.memory.memory.SessionMemory.save`; owner-only, it holds the user's
text). Names are unique in a store: `base` (the model's own zero state, never stored),
`<project>`, `<project>/<session>`, or free text. Every write is atomic (temporary file, then rename; the
record last), so a reader (the server) never sees half a state, and a new state is visible at once.
A state belongs to one base model (its parameter hash) and tokenizer; using it with another is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_path, atomic_write
from rwkvjax.errors import CheckpointMismatch, ConfigError, DataError, MissingFile

BASE = "base"
_NAME = re.compile(r"^[\w.@+-]+(/[\w.@+-]+)*$")


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


def check_name(name: str) -> str:
    if name == BASE or not _NAME.match(name) or len(name) > 200:
        raise ConfigError(f"state name {name!r}: use letters, digits, . _ - + @ and '/' between parts, not '{BASE}'")
    return name


class StateStore:
    def __init__(self, root: str | os.PathLike, *, create: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            if not create:
                raise MissingFile(f"{self.root}: no such states folder")
            self.root.mkdir(parents=True, exist_ok=True)

    # ----- reading -----
    def records(self) -> list[StateRecord]:
        out = []
        for f in sorted(self.root.glob("*.json")):
            try:
                d = json.loads(f.read_text())
                out.append(StateRecord(**{**d, "shape": tuple(d["shape"])}))
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                raise DataError(f"{f}: not a state record ({e}); remove the file or restore it") from None
        return sorted(out, key=lambda r: (r.created, r.name))

    def get(self, name_or_id: str) -> StateRecord:
        for r in self.records():
            if name_or_id in (r.name, r.id):
                return r
        known = ", ".join(r.name for r in self.records()) or "none"
        raise UnknownState(f"{self.root}: no state named {name_or_id!r} (states: {known}; `{BASE}` is the model's "
                           "own start state)")

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
            ffn_shift: np.ndarray | None = None, replace: bool = False, memory=None) -> StateRecord:
        """Store a state under `name`. With `replace`, a state of that name (same base model) is overwritten
        in place (its id stays, the previous one is its parent); otherwise the name must be new.

        `memory`: a session memory (anything with `save(path)`) stored with the state; None removes a stored one
        when the state is replaced (the state is then exactly what was given)."""
        from safetensors.numpy import save_file
        check_name(name)
        wkv = np.asarray(wkv, np.float32)
        if wkv.ndim != 4 or wkv.shape[2] != wkv.shape[3]:
            raise DataError(f"state {name!r}: wkv must be [L, H, N, N], got {wkv.shape}")
        if not np.isfinite(wkv).all():
            raise DataError(f"state {name!r}: wkv holds non-finite values; refused")
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
        with atomic_path(self.root / f"{sid}.safetensors", private=False) as tmp:
            save_file(tensors, str(tmp))
        mem = self.root / f"{sid}.memory.safetensors"
        if memory is not None:
            memory.save(mem)  # written whole before the record points at it
        else:
            mem.unlink(missing_ok=True)
        self._write_record(rec)
        return rec

    def memory_file(self, rec: StateRecord) -> Path | None:
        """The session memory stored with a state, or None when it has none."""
        path = self.root / f"{rec.id}.memory.safetensors"
        return path if path.is_file() else None

    def _write_record(self, rec: StateRecord) -> None:
        atomic_write(self.root / f"{rec.id}.json", json.dumps(rec.to_json(), indent=1).encode(), private=False)

    def fork(self, src: str, name: str, *, base_hash: str | None = None) -> StateRecord:
        """A copy of `src` under a new name, with `src` as its parent; onto the same base model only."""
        rec = self.get(src)
        if base_hash is not None and base_hash != rec.base_hash:
            raise CheckpointMismatch(f"state {rec.name!r} was tuned for base model {rec.base_hash}; it cannot be "
                                     f"forked onto model {base_hash} (a state means nothing to another model)")
        arr = self.arrays(rec)
        src_mem = self.memory_file(rec)
        return self.put(name, arr["wkv"], base_hash=rec.base_hash, tokenizer=rec.tokenizer, parent=rec.id,
                        hypernet=rec.hypernet, source={"fork": rec.id}, att_shift=arr.get("att_shift"),
                        ffn_shift=arr.get("ffn_shift"), memory=None if src_mem is None else _FileCopy(src_mem))

    def remove(self, name_or_id: str) -> StateRecord:
        """Remove a state; its children keep their record (their `parent` then names a removed id)."""
        rec = self.get(name_or_id)
        (self.root / f"{rec.id}.json").unlink()
        (self.root / f"{rec.id}.safetensors").unlink(missing_ok=True)
        (self.root / f"{rec.id}.memory.safetensors").unlink(missing_ok=True)
        return rec


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
