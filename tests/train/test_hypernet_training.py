"""Offline hypernetwork training on the shared training loop: the curve and the metrics lines are its records, the
file it saves is what it trained (moved from the identity-like start), and a plain batch trains no hypernetwork."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import rwkvjax
from rwkvjax.merges.dyntok import for_tokenizer
from rwkvjax.merges.hypernet import init_hypernet
from rwkvjax.merges.hypernet_io import load_hypernet
from rwkvjax.model.init import init_params
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.config import HyperTrainConfig
from rwkvjax.train.data import stream_windows
from rwkvjax.train.hypernet import CURVE_EVERY, train_hypernet, train_speed

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hyper")
    cfg = HyperTrainConfig(traces="unused", out=str(tmp / "h.safetensors"), ctx_len=32, batch=4,
                           steps=CURVE_EVERY + 2, warmup=2, window=64, threshold=2, n_slots=16, speed_steps=1,
                           metrics=str(tmp / "metrics.jsonl"))
    tok = ByteTokenizer()
    dyntok = for_tokenizer(tok, window=cfg.window, threshold=cfg.threshold, n_slots=cfg.n_slots)
    text = Path(textwrap.__file__).read_text()[:6000]
    windows = stream_windows("textwrap", tok.encode(text), cfg.ctx_len, tok, dyntok)
    params = init_params(SMALL, 0, live_output=True)
    hyper0 = init_hypernet(SMALL, jax.random.key(cfg.seed))
    res = train_hypernet(cfg, SMALL, params, windows, hyper0, model_hash="0" * 32, meta={"split": "test"},
                         progress=False)
    return cfg, params, windows, hyper0, res


def test_curve_and_metrics_lines_are_the_steps_records(trained):
    cfg, _, _, _, res = trained
    assert (res.steps, res.stopped) == (cfg.steps, "done")
    recs = [json.loads(line) for line in Path(cfg.metrics).read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, cfg.steps + 1))
    assert all(np.isfinite(r["bits_per_byte"]) and r["tokens_per_s"] > 0 for r in recs)
    # curve points: 0-based steps 0, CURVE_EVERY and the last, each the logged record's strict bits per byte
    assert [p["step"] for p in res.curve] == [0, CURVE_EVERY, cfg.steps - 1]
    for p in res.curve:
        assert p["train_bpb"] == recs[p["step"]]["bits_per_byte"]


def test_the_saved_file_is_what_was_trained(trained):
    cfg, _, _, hyper0, res = trained
    saved = load_hypernet(cfg.out, SMALL, "0" * 32)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(res.trainable.hyper)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(hyper0)))
    assert float(np.abs(np.asarray(res.trainable.wkv)).max()) == 0.0  # S0 stays the frozen zeros
    from safetensors import safe_open
    with safe_open(cfg.out, "np") as f:
        md = f.metadata()
    assert json.loads(md["meta"]) == {"split": "test", "steps": cfg.steps, "heldout_bpb": None}


def test_training_speed_compares_plain_and_merged_steps(trained):
    cfg, params, windows, _, res = trained
    tok = ByteTokenizer()
    plain = stream_windows("textwrap", tok.encode(Path(textwrap.__file__).read_text()[:6000]), cfg.ctx_len, tok)
    speed = train_speed(cfg, SMALL, params, plain, windows, res.trainable.hyper)
    assert speed["plain"]["step_s"] > 0 and speed["merges"]["step_s"] > 0
    assert speed["gain"] == speed["merges"]["base_tokens_per_s"] / speed["plain"]["base_tokens_per_s"]
