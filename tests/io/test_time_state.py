"""RWKV-PEFT `time_state` interop: a state exported by rwkvjax is the initial state the official `rwkv` package
(cpu fp32) continues from, with the same logits as rwkvjax; import reads it (and merged model files) back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rwkvjax
from rwkvjax.errors import CheckpointError, CheckpointMismatch
from rwkvjax.io.states import StateStore
from rwkvjax.io.time_state import read_time_state, write_time_state
from rwkvjax.model.params import params_hash
from rwkvjax.model.state import start_state
from rwkvjax.text.tokenizer import tokenizer_id
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "data" / "golden" / "tiny.safetensors"

_OFFICIAL = r"""
import json, os, sys, tempfile
os.environ["RWKV_V7_ON"] = "1"; os.environ["RWKV_CUDA_ON"] = "0"; os.environ["RWKV_JIT_ON"] = "1"
import torch
from safetensors.torch import load_file
from rwkv.model import RWKV
model_st, state_file, tokens = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with tempfile.TemporaryDirectory() as tmp:
    torch.save(load_file(model_st), f"{tmp}/m.pth")
    model = RWKV(model=f"{tmp}/m", strategy="cpu fp32")
ts = torch.load(state_file, map_location="cpu", weights_only=True)
st = model.generate_zero_state()
n_layer = len(st) // 3
for i in range(n_layer):
    st[3 * i + 1] = ts[f"blocks.{i}.att.time_state"].float()
logits, _ = model.forward(tokens, st, full_output=True)
print(json.dumps(logits.float().numpy().tolist()))
"""


def _s0(config, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, (config.n_layer, config.n_head, config.head_size, config.head_size)).astype(np.float32)


def test_exported_state_gives_official_logits(tmp_path):
    pytest.importorskip("torch", reason="the official package needs torch (the [reference] extra)")
    pytest.importorskip("rwkv", reason="the official package is the [reference] extra")
    loaded = rwkvjax.load(GOLDEN)
    config, params = loaded.arch, loaded.params
    store = StateStore(tmp_path / "states")
    store.put("tuned", _s0(config), base_hash=params_hash(params), tokenizer="test")
    out = tmp_path / "tuned.pth"
    subprocess.run([sys.executable, str(REPO / "cli.py"), "state", "export", "tuned", str(out), "--states",
                    str(tmp_path / "states")], check=True, capture_output=True, timeout=300)
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, config.vocab_size, 17)]
    r = subprocess.run([sys.executable, "-c", _OFFICIAL, str(GOLDEN), str(out), json.dumps(tokens)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    official = np.asarray(json.loads(r.stdout.strip().splitlines()[-1]), np.float64)
    ours, _ = rwkvjax.forward(params, np.asarray([tokens], np.int32), start_state(read_time_state(out), 1),
                              config=config)
    ours = np.asarray(ours[0], np.float64)
    err = np.abs(ours - official).max() / official.std()
    print(f"time_state parity vs official rwkv (cpu fp32): max|Δ|/std = {err:.3g}, max|Δ| = "
          f"{np.abs(ours - official).max():.3g}")
    assert err <= 1e-5, f"max|Δ|/std = {err:.3g}"
    zero, _ = rwkvjax.forward(params, np.asarray([tokens], np.int32), rwkvjax.zero_state(config, 1), config=config)
    assert np.abs(np.asarray(zero[0]) - official).max() > 1e-2  # the state really is in effect


@pytest.mark.parametrize("suffix,dtype", [(".safetensors", "fp32"), (".safetensors", "bf16"), (".pth", "fp32")])
def test_write_read_round_trip(tmp_path, suffix, dtype):
    if suffix == ".pth":
        pytest.importorskip("torch", reason=".pth needs torch (the [reference] extra)")
    wkv = np.random.default_rng(0).normal(size=(3, 2, 8, 8)).astype(np.float32)
    path = write_time_state(tmp_path / f"s{suffix}", wkv, dtype)
    back = read_time_state(path)
    np.testing.assert_allclose(back, wkv, rtol=1e-2 if dtype == "bf16" else 0, atol=0)


def test_import_from_a_model_with_merged_time_state_and_refusals(tmp_path):
    from safetensors.numpy import load_file, save_file

    from rwkvjax.io.convert import save_official
    from rwkvjax.model.init import init_params
    config = rwkvjax.Architecture(256, 128, 3, 256, 32, 32, 32, 32)  # byte vocab: the store records its tokenizer
    model = save_official(init_params(config, 0), config, tmp_path / "byte.safetensors", "fp32")
    loaded = rwkvjax.load(model)
    config, params = loaded.arch, loaded.params
    sd = load_file(model)
    s0 = _s0(config, 2)
    merged = tmp_path / "merged.safetensors"
    save_file({**sd, **{f"blocks.{i}.att.time_state": s0[i] for i in range(config.n_layer)}}, str(merged))
    np.testing.assert_array_equal(read_time_state(merged), s0)
    st = tmp_path / "states"
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "cli.py"), "state", *a], capture_output=True,
                                    text=True, timeout=300)
    r = run("import", str(merged), "--name", "merged", "--states", str(st), "--model", model)
    assert r.returncode == 0, r.stderr
    rec = StateStore(st).get("merged")
    assert rec.base_hash == params_hash(params) and rec.source == {"file": str(merged)}
    np.testing.assert_array_equal(StateStore(st).arrays(rec)["wkv"], s0)
    # a state of another shape, a partial file, a file with no state
    bad = tmp_path / "bad.safetensors"
    save_file({"blocks.0.att.time_state": s0[0]}, str(bad))
    r = run("import", str(bad), "--name", "x", "--states", str(st), "--model", model)
    assert r.returncode == 2 and "shape" in r.stderr and "Traceback" not in r.stderr
    save_file({"blocks.1.att.time_state": s0[1]}, str(bad))
    with pytest.raises(CheckpointError, match="layer"):
        read_time_state(bad)
    with pytest.raises(CheckpointError, match="time_state"):
        read_time_state(GOLDEN)


def test_store_lineage_fork_and_refusals(tmp_path):
    store = StateStore(tmp_path)
    wkv = np.zeros((1, 1, 4, 4), np.float32)
    a = store.put("proj", wkv + 1, base_hash="h1", tokenizer="t")
    b = store.fork("proj", "proj/session-1")
    assert b.parent == a.id and [r.name for r in store.lineage(b)] == ["proj/session-1", "proj"]
    assert [r.name for r in store.children(a)] == ["proj/session-1"]
    with pytest.raises(CheckpointMismatch, match="cannot be forked onto"):
        store.fork("proj", "elsewhere", base_hash="h2")
    with pytest.raises(CheckpointMismatch, match="tuned for base model"):
        store.load("proj", base_hash="h2", tokenizer="t")
    with pytest.raises(ValueError, match="exists"):
        store.put("proj", wkv, base_hash="h1", tokenizer="t")
    with pytest.raises(ValueError, match="non-finite"):
        store.put("nan", wkv * np.nan, base_hash="h1", tokenizer="t")
    with pytest.raises(ValueError, match="state name"):
        store.put("base", wkv, base_hash="h1", tokenizer="t")
    again = store.put("proj", wkv + 2, base_hash="h1", tokenizer="t", replace=True)
    assert again.id == a.id and store.arrays(again)["wkv"][0, 0, 0, 0] == 2
    with pytest.raises(ValueError, match="recursive"):  # a parent is never removed from under its children
        store.remove("proj")
    assert store.get("proj/session-1").parent == a.id  # the child keeps its lineage record
    assert [r.name for r in store.remove("proj", recursive=True)] == ["proj/session-1", "proj"]
    with pytest.raises(FileNotFoundError, match="no state named"):
        store.get("proj")
    assert tokenizer_id(rwkvjax.text.tokenizer.ByteTokenizer()) == "bytes-256"
