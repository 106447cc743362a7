"""The run's own state parts (counters, identity) and the one way tuned states are published."""

from __future__ import annotations

import types

import numpy as np
import pytest

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.states import StateStore
from rwkvjax.model.config import Architecture
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.data import Window
from rwkvjax.train.projects import publish_tuned
from rwkvjax.train.run_state import RunCounters, RunIdentity
from rwkvjax.train.trainable import Trainable

ARCH = Architecture(vocab_size=256, n_embd=64, n_layer=1, dim_ffn=256, d_decay=8, d_aaa=8, d_mv=8, d_gate=8)


def _window(nbytes: int, n_base: int) -> Window:
    return Window("s", np.zeros(n_base, np.int32), nbytes, n_base)


def test_counters_count_the_live_windows_and_round_trip():
    c = RunCounters()
    assert c.count(1, [_window(10, 4), _window(6, 3)]) == (7, 16)
    assert c.count(2, []) == (0, 0)
    assert c.checkpoint_host() == {"step": 2, "tokens_seen": 7, "bytes_seen": 16}
    other = RunCounters()
    other.restore_checkpoint(c.checkpoint_host(), {})
    assert other == c


def test_identity_refuses_another_base_model_or_a_fixed_setting():
    cfg = TrainConfig(ckpt_dir="ck")
    ident = RunIdentity(cfg, ARCH, "hash-a")
    host = ident.checkpoint_host()
    assert host["base_hash"] == "hash-a" and host["model_config"]["n_embd"] == 64
    ident.check_checkpoint(host)  # its own step resumes
    with pytest.raises(CheckpointMismatch, match="different base model"):
        RunIdentity(cfg, ARCH, "hash-b").check_checkpoint(host)
    with pytest.raises(CheckpointMismatch, match="ctx_len"):
        RunIdentity(TrainConfig(ckpt_dir="ck", ctx_len=cfg.ctx_len * 2), ARCH, "hash-a").check_checkpoint(host)


def _tr(v: float) -> Trainable:
    return Trainable(wkv=np.full((1, 1, 64, 64), v, np.float32))


def test_publish_writes_the_global_state_its_candidate_and_projects_as_its_children(tmp_path):
    store = StateStore(tmp_path / "states")
    src = {"checkpoint": "ck", "step": 3}
    memories = {None: None, "-home-a": None}
    cand = types.SimpleNamespace(trainable=_tr(2.0), reason="held-out slice worse")
    out = publish_tuned(store, "run", base_hash="h", tokenizer="byte", source=src, memory=memories.get,
                        state=_tr(1.0), scope="global", candidate=cand, projects={"-home-a": _tr(3.0)})
    assert list(out) == ["run", "run.candidate", "-home-a"]
    top = out["run"]
    assert top.source == {**src, "scope": "global"}
    assert out["run.candidate"].parent == top.id and out["-home-a"].parent == top.id
    assert out["run.candidate"].source == {**src, "scope": "consolidation candidate", "reason": cand.reason}
    assert out["-home-a"].source == {**src, "scope": "project", "project": "-home-a"}
    assert float(store.arrays(out["-home-a"])["wkv"].max()) == 3.0
    # a candidate alone (`cli.py consolidate`, not promoted) is the child of the stored state of that name
    later = publish_tuned(store, "run", base_hash="h", tokenizer="byte", source={**src, "reason": "r"},
                          candidate=types.SimpleNamespace(trainable=_tr(4.0), reason="r"))
    assert list(later) == ["run.candidate"] and later["run.candidate"].parent == top.id
    assert later["run.candidate"].id == out["run.candidate"].id  # replaced in place
    assert float(store.arrays(later["run.candidate"])["wkv"].max()) == 4.0
