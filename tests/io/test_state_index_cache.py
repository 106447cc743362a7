"""The state store's index is read once and kept: lookups do not re-read the records (the server looks one up for
every request naming a state) until the store changes, whoever changed it (this object, another store object, or
another process); conversation states beyond a cap are evicted, least recently written first, under the lock."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np

from rwkvjax.io.states import StateStore
from tests.conftest import REPO

N = 50  # records in the store: a lookup that re-read them would read N files


def _wkv(v: float) -> np.ndarray:
    return np.full((1, 1, 4, 4), v, np.float32)


def _counting(store: StateStore, monkeypatch) -> list[str]:
    reads: list[str] = []
    real = StateStore._read_record

    def counted(self, f):
        reads.append(f.name)
        return real(self, f)

    monkeypatch.setattr(StateStore, "_read_record", counted)
    return reads


def test_lookups_read_the_records_once_and_see_every_write(tmp_path, monkeypatch):
    root = tmp_path / "states"
    writer = StateStore(root)
    for i in range(N):
        writer.put(f"s{i}", _wkv(i), base_hash="h", tokenizer="t")
    store = StateStore(root)
    reads = _counting(store, monkeypatch)
    for i in range(200):
        assert store.get(f"s{i % N}").name == f"s{i % N}"
    assert len(reads) == N  # one scan, then the cached index
    reads.clear()
    assert [r.name for r in store.records()] == [f"s{i}" for i in range(N)] and not reads

    # its own write: seen at once
    store.put("mine", _wkv(1), base_hash="h", tokenizer="t")
    assert store.get("mine").name == "mine"
    # another store object's write (as the server's tuner has its own): seen at once
    writer.put("theirs", _wkv(2), base_hash="h", tokenizer="t")
    assert store.get("theirs").name == "theirs"
    writer.remove("theirs")
    assert "theirs" not in {r.name for r in store.records()}
    reads.clear()
    # another process's write
    code = ("import numpy as np; from rwkvjax.io.states import StateStore; "
            f"StateStore({str(root)!r}).put('other-process', np.zeros((1, 1, 4, 4), np.float32), base_hash='h', "
            "tokenizer='t')")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)
    assert store.get("other-process").name == "other-process"
    scanned = len(reads)
    assert store.get("s0").name == "s0" and len(reads) == scanned  # and cached again


def test_a_record_renamed_in_by_hand_is_seen(tmp_path):
    """A writer that does not bump the generation (an older version, a copy by hand) still changes the folder."""
    a, b = StateStore(tmp_path / "a"), StateStore(tmp_path / "b")
    a.put("x", _wkv(1), base_hash="h", tokenizer="t")
    rec = b.put("y", _wkv(2), base_hash="h", tokenizer="t")
    assert [r.name for r in a.records()] == ["x"]
    for suffix in (".safetensors", ".json"):
        (tmp_path / "b" / f"{rec.id}{suffix}").rename(tmp_path / "a" / f"{rec.id}{suffix}")
    assert [r.name for r in a.records()] == ["x", "y"]


def test_conversations_beyond_the_cap_are_evicted_oldest_first(tmp_path, caplog):
    store = StateStore(tmp_path / "states")
    shared = store.put("proj", _wkv(0), base_hash="h", tokenizer="t")
    convs = [store.put(f"conv/proj/c{i}", _wkv(i), base_hash="h", tokenizer="t", parent=shared.id,
                       conversation=True) for i in range(6)]
    # a state forked from c0 pins it: its fork names it as parent
    store.fork("conv/proj/c0", "kept-from-c0")
    # c1 is written again: now the most recent
    store.put("conv/proj/c1", _wkv(9), base_hash="h", tokenizer="t", replace=True, conversation=True)
    gone = store.evict_conversations(3)
    assert [r.name for r in gone] == ["conv/proj/c2", "conv/proj/c3", "conv/proj/c4"]
    names = {r.name for r in store.records()}
    assert names == {"proj", "kept-from-c0", "conv/proj/c0", "conv/proj/c1", "conv/proj/c5"}
    for r in gone:  # the record and every file of the state
        assert not list((tmp_path / "states").glob(f"{r.id}.*"))
    assert {c.id for c in convs} - {r.id for r in gone} <= {r.id for r in store.records()}
    assert store.evict_conversations(3) == []  # at the cap: nothing more
    # the conversation just written stays even when it is the least recent one left
    assert [r.name for r in store.evict_conversations(2, keep="conv/proj/c5")] == ["conv/proj/c1"]
    with caplog.at_level(logging.WARNING):
        assert StateStore(tmp_path / "states").records()  # a fresh reader finds a consistent store
    assert not caplog.records
