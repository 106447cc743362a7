"""The named-state store with several writers and hostile contents: writers in two processes never fail, never
corrupt a record and never make one name twice; a record that cannot be read is skipped (one warning) instead of
breaking the store; ids are only the ones the store makes (`../x` reaches nothing); names are checked once
(`..`, `base`, `base/x` refused; `conv/...` is the server's conversations' alone); a parent is removed only with its subtree; `-`-leading names work on
the command line."""

from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

from rwkvjax.errors import ConfigError
from rwkvjax.io.states import StateStore, UnknownState
from tests.conftest import REPO

PUTS = 40  # per process: the unlocked store failed within a few dozen concurrent puts
TRIALS = 10

_ctx = multiprocessing.get_context("spawn")  # the test process may hold jax's threads: no fork


def _wkv(v: float) -> np.ndarray:
    return np.full((1, 1, 4, 4), v, np.float32)


def _replace_many(root: str, who: int, barrier, errors) -> None:
    store = StateStore(root)
    barrier.wait()  # both writers start together: the overlap does not depend on start-up times
    for i in range(PUTS):
        try:
            store.put("shared", _wkv(who * 1000 + i), base_hash="h", tokenizer="t", replace=True)
        except Exception as e:  # counted, not raised: the parent reports every failure
            errors.put(f"{type(e).__name__}: {e}")


def _create_each(root: str, barrier, outcomes) -> None:
    store = StateStore(root)
    for t in range(TRIALS):
        barrier.wait()  # both try to create the same new name at once
        try:
            store.put(f"new-{t}", _wkv(t), base_hash="h", tokenizer="t")
            outcomes.put((t, "created"))
        except ConfigError as e:
            outcomes.put((t, "exists" if "exists" in str(e) else f"other: {e}"))


def _write_many(path: str, who: int, barrier, errors) -> None:
    from rwkvjax.atomic import atomic_write
    barrier.wait()
    for i in range(PUTS):
        try:
            atomic_write(path, f"{who}:{i}".encode() * 1000, private=False)
        except Exception as e:
            errors.put(f"{type(e).__name__}: {e}")


def _drain(q) -> list:
    out = []
    while not q.empty():
        out.append(q.get())
    return out


def _run_two(target, args_of) -> None:
    procs = [_ctx.Process(target=target, args=args_of(who)) for who in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0


def test_two_writers_of_one_name_never_fail_and_leave_a_readable_store(tmp_path):
    root = tmp_path / "states"
    StateStore(root)
    barrier, errors = _ctx.Barrier(2), _ctx.Queue()
    _run_two(_replace_many, lambda who: (str(root), who, barrier, errors))
    assert _drain(errors) == []
    store = StateStore(root, create=False)
    recs = store.records()
    assert [r.name for r in recs] == ["shared"]
    last = store.arrays(recs[0])["wkv"][0, 0, 0, 0]
    assert last in (1000 + PUTS - 1, 2000 + PUTS - 1)  # the last put of one writer, whole
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == \
        [f"{recs[0].id}.json", f"{recs[0].id}.safetensors"]
    assert not list(root.glob(".*.tmp*"))  # no temporary file left behind


def test_two_unlocked_writers_of_one_file_use_their_own_temporaries(tmp_path):
    path = tmp_path / "f.bin"
    barrier, errors = _ctx.Barrier(2), _ctx.Queue()
    _run_two(_write_many, lambda who: (str(path), who, barrier, errors))
    assert _drain(errors) == []
    assert path.read_bytes() in (f"1:{PUTS - 1}".encode() * 1000, f"2:{PUTS - 1}".encode() * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_two_processes_creating_one_name_make_it_once(tmp_path):
    root = tmp_path / "states"
    StateStore(root)
    barrier, outcomes = _ctx.Barrier(2), _ctx.Queue()
    _run_two(_create_each, lambda who: (str(root), barrier, outcomes))
    got = _drain(outcomes)
    for t in range(TRIALS):
        assert sorted(o for tt, o in got if tt == t) == ["created", "exists"]
    names = [r.name for r in StateStore(root).records()]
    assert sorted(names) == sorted(f"new-{t}" for t in range(TRIALS))  # no duplicates


def _record(store: StateStore, name: str) -> dict:
    return json.loads((store.root / f"{store.get(name).id}.json").read_text())


def test_crafted_ids_reach_nothing_outside_the_store(tmp_path, caplog):
    store = StateStore(tmp_path / "states")
    store.put("good", _wkv(1), base_hash="h", tokenizer="t")
    outside = tmp_path / "x.json"
    outside.write_text("{}")
    (tmp_path / "x.safetensors").write_bytes(b"keep")
    evil = {**_record(store, "good"), "id": "../x", "name": "evil"}
    (store.root / "evil.json").write_text(json.dumps(evil))
    # a file named as a valid id whose record claims another id is not trusted either
    (store.root / "0123456789ab.json").write_text(json.dumps({**evil, "id": "../x", "name": "evil2"}))
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.states"):
        assert [r.name for r in store.records()] == ["good"]
    for target in ("../x", "evil", "evil2"):
        with pytest.raises(UnknownState):
            store.remove(target)
    assert outside.is_file() and (tmp_path / "x.safetensors").read_bytes() == b"keep"


def test_a_stray_record_is_skipped_with_one_warning(tmp_path, caplog):
    store = StateStore(tmp_path / "states")
    store.put("good", _wkv(1), base_hash="h", tokenizer="t")
    (store.root / "notes.json").write_text("{this is not json")
    (store.root / "list.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="rwkvjax.io.states"):
        for _ in range(3):  # the server reads the records on every request: the warning is not repeated
            assert [r.name for r in store.records()] == ["good"]
            assert store.get("good").name == "good"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert sum("notes.json" in w for w in warned) == 1 and sum("list.json" in w for w in warned) == 1


@pytest.mark.parametrize("name", ["..", ".", "a/../b", "a//b", "/abs", "base", "base/x", "0123456789ab",
                                  "a b", "x" * 201, "a\u200bb"])
def test_bad_names_are_refused(tmp_path, name):
    store = StateStore(tmp_path / "states")
    store.put("src", _wkv(1), base_hash="h", tokenizer="t")
    with pytest.raises(ConfigError, match="state name"):
        store.put(name, _wkv(1), base_hash="h", tokenizer="t")
    with pytest.raises(ConfigError, match="state name"):
        store.fork("src", name)
    assert [r.name for r in store.records()] == ["src"]


def test_only_the_servers_conversations_are_stored_under_conv(tmp_path):
    store = StateStore(tmp_path / "states")
    rec = store.put("conv/base/s1", _wkv(1), base_hash="h", tokenizer="t", replace=True,
                    source={"ttt": "conv/base/s1", "tokens": 3}, conversation=True)
    assert store.get("conv/base/s1").id == rec.id
    # nothing else writes there, whatever its record says; a conversation writes nowhere else, so it cannot
    # replace a shared state of the name its model and session would once have made
    shared = store.put("proj/experiment", _wkv(2), base_hash="h", tokenizer="t")
    for name in ("conv", "conv/base/s2", "conv/base/s1"):
        with pytest.raises(ConfigError, match="conversations"):
            store.put(name, _wkv(1), base_hash="h", tokenizer="t", replace=True, source={"ttt": name})
        with pytest.raises(ConfigError, match="conversations"):
            store.fork("proj/experiment", name)
    for name in ("proj/experiment", "base/s2", "conv"):
        with pytest.raises(ConfigError, match="state name"):
            store.put(name, _wkv(3), base_hash="h", tokenizer="t", replace=True, conversation=True)
    assert store.get("proj/experiment").id == shared.id and store.get("proj/experiment").source is None
    assert sorted(r.name for r in store.records()) == ["conv/base/s1", "proj/experiment"]
    assert store.put("-home-me-proj", _wkv(1), base_hash="h", tokenizer="t").name == "-home-me-proj"


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "state", *args], capture_output=True, text=True,
                          timeout=300)


def test_rm_refuses_a_parent_unless_recursive_and_takes_dash_names(tmp_path):
    d = tmp_path / "states"
    store = StateStore(d)
    store.put("-home-me-proj", _wkv(1), base_hash="h", tokenizer="t")
    store.fork("-home-me-proj", "-home-me-proj/exp")
    store.fork("-home-me-proj/exp", "-home-me-proj/exp/deeper")
    store.put("other", _wkv(2), base_hash="h", tokenizer="t")
    r = _cli("show", "-home-me-proj", "--states", str(d))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["name"] == "-home-me-proj" and shown["children"] == ["-home-me-proj/exp"]
    r = _cli("rm", "-home-me-proj", "--states", str(d))
    assert r.returncode == 2 and "--recursive" in r.stderr and "Traceback" not in r.stderr
    assert len(StateStore(d).records()) == 4
    r = _cli("fork", "other", "-x", "--states", str(d))
    assert r.returncode == 0, r.stderr
    r = _cli("rm", "--states", str(d), "-home-me-proj", "--recursive")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["removed -home-me-proj/exp/deeper", "removed -home-me-proj/exp",
                                        "removed -home-me-proj"]
    assert sorted(r.name for r in StateStore(d).records()) == ["-x", "other"]
