"""Per-project start states, their place in the named-state store, and sleep consolidation."""

from __future__ import annotations

import json
import subprocess
import sys

import chex
import numpy as np
import pytest

import rwkvjax
from benchmarks.common.sessions import write_session
from rwkvjax.io.states import StateStore
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.consolidate import ConsolidationSettings, consolidate
from rwkvjax.train.run import DEMO_MODEL, Trainer
from rwkvjax.train.step import to_host
from tests.conftest import REPO

CTX = 64
ALPHA = "-home-dev-alpha"
BETA = "-home-dev-beta"


def _texts(seed: int, n: int) -> list[str]:
    import random
    rng = random.Random(seed)
    words = ["parse", "config", "value", "retry", "socket", "tensor", "cache", "index", "token", "shard"]
    return [" ".join(rng.choice(words) for _ in range(60)) + "\n" for _ in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    for i, (a, b) in enumerate(zip(_texts(0, 3), _texts(1, 3))):
        write_session(root / "src" / ALPHA, "def alpha():\n" + a, start=f"2026-01-01T00:00:{2 * i:02d}Z",
                      sid=f"a{i}", cwd="/home/dev/alpha")
        write_session(root / "src" / BETA, "class Beta:\n" + b, start=f"2026-01-01T00:00:{2 * i + 1:02d}Z",
                      sid=f"b{i}", cwd="/home/dev/beta")
    cfg = TrainConfig(ckpt_dir=str(root / "ck"), source=(str(root / "src"),), model=str(DEMO_MODEL), steps=None,
                      ctx_len=CTX, replay_per_step=1, save_every=1000, lr=0.1, lr_final=0.01, decay_steps=50,
                      states=str(root / "states"), state_scope="per-project", gate_slice_every=4)
    chex.clear_trace_counter()
    tr = Trainer(cfg, model=rwkvjax.load(DEMO_MODEL))
    out = tr.run(progress=False)
    recs = [json.loads(x) for x in (root / "ck" / "metrics.jsonl").read_text().splitlines()]
    return dict(root=root, cfg=cfg, trainer=tr, out=out, recs=recs)


def test_each_project_trains_its_own_state(run):
    recs, tr = run["recs"], run["trainer"]
    assert {r["project"] for r in recs} == {ALPHA, BETA}
    for r in recs:  # a step's windows all come from the project whose state it trains
        assert all(s[0] == ("a" if r["project"] == ALPHA else "b") for s in r["live_sessions"])
    trees, _ = tr.projects.trees()
    a, b = (np.asarray(to_host(trees[p]).wkv) for p in (ALPHA, BETA))
    assert np.abs(a).max() > 0 and np.abs(b).max() > 0 and not np.allclose(a, b)
    # live windows never train the global state
    np.testing.assert_array_equal(np.asarray(to_host(tr.projects.global_state).wkv), 0.0)


def test_project_states_are_in_the_store_with_lineage(run):
    store = StateStore(run["cfg"].states, create=False)
    top = store.get("ck")
    for p in (ALPHA, BETA):
        rec = store.get(p)
        assert rec.parent == top.id and rec.source["project"] == p and rec.source["scope"] == "project"
        arr = store.arrays(rec)["wkv"]
        np.testing.assert_allclose(arr, np.asarray(to_host(run["trainer"].projects.trees()[0][p]).wkv))


def test_each_project_has_a_memory_and_the_global_one_learns_them_all(run):
    """A project's memory starts as a copy of the global one and learns its own windows; the global memory learns
    every project's: replaying the records in order, each project's memory grows only by what it learned, and
    what they learned adds up to the global memory."""
    from rwkvjax.io.states import StateStore
    from rwkvjax.memory.memory import SessionMemory
    from rwkvjax.train.session_memory import GLOBAL
    recs, mems = run["recs"], run["trainer"].memory.memories
    assert set(mems) == {GLOBAL, ALPHA, BETA}
    seen, total = {}, 0
    for r in recs:
        now = r["memory"]["symbols_seen"]
        before = seen.get(r["project"], total)  # a new project's memory: the global one as it was
        learned = r["memory_symbols"] if r["gate"] == "accepted" else 0
        assert now - before == learned, r["step"]
        seen[r["project"]], total = now, total + learned
        assert r["memory_global_live_bpb"] is not None
    assert mems[GLOBAL].symbols_seen == total > mems[ALPHA].symbols_seen
    # published with the states: the run's state brings the global memory, each project's its own
    store = StateStore(run["cfg"].states, create=False)
    for state, name in (("ck", GLOBAL), (ALPHA, ALPHA), (BETA, BETA)):
        saved = SessionMemory.load(store.memory_file(store.get(state))).state_dict()[1]
        for k, v in mems[name].state_dict()[1].items():
            np.testing.assert_array_equal(saved[k], v)


def test_resume_restores_every_project(run):
    cfg = run["cfg"]
    chex.clear_trace_counter()
    with Trainer(cfg, model=rwkvjax.load(DEMO_MODEL)) as again:  # closed, so the folder is free for the next test
        assert set(again.projects.names) == {ALPHA, BETA}
        for name, mem in run["trainer"].memory.memories.items():
            for k, v in mem.state_dict()[1].items():
                np.testing.assert_array_equal(again.memory.memories[name].state_dict()[1][k], v)
        for p in (ALPHA, BETA):
            np.testing.assert_allclose(np.asarray(to_host(again.projects.snapshot(p).trainable).wkv),
                                       np.asarray(to_host(run["trainer"].projects.snapshot(p).trainable).wkv))
            assert len(again.projects.snapshot(p).replay["windows"]) == \
                len(run["trainer"].projects.snapshot(p).replay["windows"])


def test_consolidation_promotes_only_when_no_project_gets_worse(run):
    tr = run["trainer"]
    g, windows = tr.gate, tr.projects.project_windows()
    heldout = {p: ws[:2] for p, ws in windows.items()}
    config, params = tr.config, tr.learner.params
    ok = consolidate(config, params, tr.projects.global_state, windows, heldout, g.canary.probe,
                     canary_start=g.start_canary, ctx_len=CTX, settings=ConsolidationSettings(steps=8))
    better = all(ok.heldout_after[p] <= ok.heldout_before[p] for p in heldout)
    assert ok.promoted == (better and ok.canary_after <= g.start_canary * 1.01), ok.summary()
    # a canary bound the candidate cannot meet: kept as a candidate, with the reason
    no = consolidate(config, params, tr.projects.global_state, windows, heldout, g.canary.probe,
                     canary_start=ok.canary_before * 0.5, ctx_len=CTX, settings=ConsolidationSettings(steps=8))
    assert not no.promoted and "canary" in no.reason


def test_cli_consolidate_writes_the_store_and_a_resumed_run_adopts_it(run):
    cfg = run["cfg"]
    p = subprocess.run([sys.executable, str(REPO / "cli.py"), "consolidate", "--ckpt-dir", cfg.ckpt_dir,
                        "--steps", "8"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    store = StateStore(cfg.states, create=False)
    rec = store.get(out["state"])
    assert rec.source["consolidated"] == out["checkpoint_step"] and rec.source["reason"] == out["reason"]
    # the state it writes keeps the run's memory (a promoted global state would otherwise lose it)
    from rwkvjax.memory.memory import SessionMemory
    from rwkvjax.train.session_memory import checkpoint_memory
    saved, ck = SessionMemory.load(store.memory_file(rec)).state_dict()[1], checkpoint_memory(cfg.ckpt_dir)
    for k, v in ck.state_dict()[1].items():
        np.testing.assert_array_equal(saved[k], v)
    if out["promoted"]:
        assert out["state"] == "ck"
        chex.clear_trace_counter()
        with Trainer(cfg, model=rwkvjax.load(DEMO_MODEL)) as again:
            np.testing.assert_allclose(np.asarray(to_host(again.projects.global_state).wkv),
                                       store.arrays(rec)["wkv"])
    else:
        assert out["state"] == "ck.candidate" and out["reason"]


def test_per_project_needs_a_store():
    from rwkvjax.errors import ConfigError
    with pytest.raises(ConfigError, match="--states"):
        TrainConfig(ckpt_dir="x", state_scope="per-project")


def test_inspect_shows_gate_decisions_and_projects(run):
    from rwkvjax.eval.inspect import format_inspect, inspect
    rep = inspect(run["cfg"].ckpt_dir)
    g, recs = rep["gate"], run["recs"]
    decided = [r["gate"] for r in recs]
    assert g["counts"]["accepted"] == decided.count("accepted")
    assert g["counts"]["rolled_back"] == decided.count("rolled_back")
    assert g["counts"]["quarantined"] == decided.count("quarantined") + g["screened_windows"]
    assert g["screened_windows"] == sum(len(r.get("screened") or []) for r in recs)
    assert g["probe_seconds_per_step"] > 0
    assert set(rep["projects"]) == {ALPHA, BETA}
    assert sum(v["updates"] for v in rep["projects"].values()) == decided.count("accepted")
    text = format_inspect(rep)
    assert "gate: accepted" in text and f"project {ALPHA}" in text
