"""The shipped, project-trained byte model: loads, is far better than chance on held-out code, drives the demo."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

import rwkvjax
from rwkvjax.eval.scoring import score_stream
from rwkvjax.train.corpus import _is_heldout, corpus_files
from rwkvjax.train.run import DEMO_MODEL, demo_setup


def test_demo_model_is_clearly_better_than_chance_on_heldout_code():
    loaded = rwkvjax.load(DEMO_MODEL)
    cfg, params = loaded.arch, loaded.params
    assert cfg.vocab_size == 256 and 3_000_000 < cfg.n_params() < 5_000_000
    std = Path(sysconfig.get_paths()["stdlib"])
    held = [f for f in corpus_files([std / "json", std / "email", std / "logging"]) if _is_heldout(f, 20)]
    assert held, "no held-out stdlib file found"
    bits = nbytes = 0.0
    for f in held[:2]:
        data = f.read_bytes()[:4096]
        nll, _ = score_stream(params, cfg, np.frombuffer(data, np.uint8).astype(np.int32), rwkvjax.zero_state(cfg, 1))
        bits += float(nll.sum() / np.log(2))
        nbytes += len(data)
    assert bits / nbytes < 2.5, bits / nbytes  # chance is 8 bits/byte


def test_demo_setup_points_at_shipped_files(tmp_path):
    cfg, model = demo_setup(str(tmp_path / "demo"))
    config = model.arch
    assert Path(cfg.source[0]).is_dir() and config.vocab_size == 256 and cfg.steps == 60
