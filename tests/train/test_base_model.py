"""The shipped base model (issue 12): loads in bf16 within its size budget, its recipe names every corpus root and
whole held-out packages, it beats the demo model on a package neither trained on, and it meets the issue's
bar against xz -9e there (the other bars are measured in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import rwkvjax
from rwkvjax.eval.scoring import score_stream
from rwkvjax.train.run import DATA, DEMO_MODEL

BASE = DATA / "base_model.safetensors"


def test_base_model_file_and_recipe():
    assert BASE.stat().st_size <= 25 * 2**20
    from safetensors import safe_open
    with safe_open(str(BASE), "np") as f:
        assert all(str(f.get_slice(k).get_dtype()) == "BF16" for k in f.keys() if "time_" not in k), \
            {k: f.get_slice(k).get_dtype() for k in f.keys()}
    cfg = rwkvjax.load(BASE).arch
    assert cfg.vocab_size == 256
    for name in ("base_model.recipe.json", *(f"base_model.phase{i}.recipe.json" for i in (1, 2, 3))):
        r = json.loads((DATA / name).read_text())
        roots = r["corpus"]["roots"]
        assert roots and not any("claude" in x.lower() for x in roots)  # never the transcripts
        assert r["corpus"]["heldout_packages"] == sorted(r["pretrain_config"]["heldout_packages"])
    log = [json.loads(x) for x in (DATA / "base_model.metrics.jsonl").read_text().splitlines()]
    assert log[-1]["heldout_bits_per_byte"] < log[0]["heldout_bits_per_byte"]


def test_base_model_beats_the_demo_model_on_an_unseen_package():
    site = Path(sysconfig.get_paths()["purelib"]) / "hypothesis"  # held out of the base model's pretraining
    files = sorted(site.rglob("*.py"))[::40][:3]
    assert files, "hypothesis (the dev extra) is not installed"
    data = b"".join(f.read_bytes()[:3000] for f in files)
    ids = np.frombuffer(data, np.uint8).astype(np.int32)
    bpb = {}
    for name, path in (("base", BASE), ("demo", DEMO_MODEL)):
        loaded = rwkvjax.load(path)
        cfg, params = loaded.arch, loaded.params
        nll, _ = score_stream(params, cfg, ids, rwkvjax.zero_state(cfg, 1))
        bpb[name] = float(nll.sum() / np.log(2) / len(data))
    assert bpb["base"] < bpb["demo"] - 0.2, bpb


def test_base_model_beats_085_xz_on_an_unseen_package():
    """Issue 12's bar, bpb <= 0.85 x xz -9e on held-out package sources, each file compressed alone (as
    benchmarks/base_vs_compressors.py measures it on 20 files of each held-out package)."""
    from rwkvjax.eval.compressors import alone_bits

    site = Path(sysconfig.get_paths()["purelib"]) / "hypothesis"
    files = [f.read_bytes()[:16384] for f in sorted(site.rglob("*.py"))[3::37][:3]]
    assert len(files) == 3 and all(files), "hypothesis (the dev extra) is not installed"
    n = sum(map(len, files))
    loaded = rwkvjax.load(BASE)
    cfg, params = loaded.arch, loaded.params
    bits = 0.0
    for data in files:
        nll, _ = score_stream(params, cfg, np.frombuffer(data, np.uint8).astype(np.int32), rwkvjax.zero_state(cfg, 1))
        bits += float(nll.sum() / np.log(2))
    xz = sum(alone_bits("xz -9e", data) for data in files) / n
    assert bits / n <= 0.85 * xz, (bits / n, xz)


def test_base_hypernet_belongs_to_the_base_model():
    from rwkvjax.errors import CheckpointMismatch
    from rwkvjax.merges.hypernet_io import load_hypernet
    from rwkvjax.model.params import params_hash

    loaded = rwkvjax.load(BASE)
    cfg, params = loaded.arch, loaded.params
    hyper = load_hypernet(DATA / "base_hypernet.safetensors", cfg, params_hash(params))
    assert float(np.abs(hyper.out.w2).max()) > 0  # trained: the output layer starts at zero
    demo = rwkvjax.load(DEMO_MODEL).params
    with pytest.raises(CheckpointMismatch, match="trained for model"):
        load_hypernet(DATA / "base_hypernet.safetensors", cfg, params_hash(demo))
