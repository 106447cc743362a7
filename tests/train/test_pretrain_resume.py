"""Pretraining on the shared training loop: a step written before it saved through `TrainCheckpointer` (items
'params' and 'opt') still resumes exactly, a damaged step is set aside and the one before it resumes exactly,
a full disk stops the run in one line, a changed setting is refused naming it, and the metrics lines come from
`MetricsLog` (a torn last line cut off)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import TrainCheckpointer, checkpoint_manager
from rwkvjax.train.config import PretrainConfig
from rwkvjax.train.pretrain import ITEMS, OLD_ITEMS, pretrain

KW = dict(n_layer=1, n_embd=64, ctx_len=16, windows_per_segment=4, batch=2, steps=8, eval_every=4, save_every=4,
          eval_bytes=256, warmup=2, heldout_packages=("corpus/html",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre") / "corpus"
    stdlib = Path(json.__file__).parents[1]
    for pkg in ("json", "html"):
        shutil.copytree(stdlib / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    lines: list[str] = []
    res = pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **KW), log=lines.append)
    return out, res, lines


def _same_model(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_metrics_lines_are_the_evaluated_steps(reference):
    out, res, lines = reference
    written = (out / "metrics.jsonl").read_text().splitlines()
    assert [line for line in lines if line.startswith("{")] == written  # the console shows what is logged
    recs = [json.loads(line) for line in written]
    assert [r["step"] for r in recs] == [4, 8]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["heldout_bits_per_byte"]) for r in recs)
    assert res["step"] == 8 and res["heldout_bits_per_byte"] == recs[-1]["heldout_bits_per_byte"]
    host = TrainCheckpointer(out / "ckpt", read_only=True)
    try:
        assert host.restore_host(8)["items"] == list(ITEMS)
    finally:
        host.close()


def test_a_step_of_the_old_layout_resumes_exactly(corpus, reference, tmp_path):
    ref, _, _ = reference
    out = tmp_path / "old"
    shutil.copytree(ref, out)
    ck = TrainCheckpointer(out / "ckpt", read_only=True)
    params, opt, host = ck.restore(4, *_likes())
    ck.close()
    host = {k: v for k, v in host.items() if k != "items"}
    shutil.rmtree(out / "ckpt")
    mngr = checkpoint_manager(out / "ckpt", keep=2, async_save=False)  # as pretraining saved before
    mngr.save(4, args=ocp.args.Composite(**{OLD_ITEMS[0]: ocp.args.StandardSave(params),
                                            OLD_ITEMS[1]: ocp.args.StandardSave(opt)},
                                         host=ocp.args.JsonSave(host)))
    mngr.wait_until_finished()
    mngr.close()
    lines = []
    pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **KW), log=lines.append)
    assert "resumed at step 4" in lines
    _same_model(out, ref)


def _likes():
    """Templates of the parameters and optimizer state the steps hold."""
    from rwkvjax.model.init import init_params
    from rwkvjax.train.pretrain import pretrain_optimizer
    cfg = PretrainConfig(out="unused", **KW)
    params = init_params(cfg.model_config(), cfg.seed)
    return params, pretrain_optimizer(cfg).init(params)


def test_a_damaged_step_is_set_aside_and_the_one_before_resumes_exactly(corpus, reference, tmp_path):
    ref, _, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    for f in (out / "ckpt" / "8" / ITEMS[0]).rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # a copy cut short
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train_lo')  # a record whose write was killed
    lines = []
    pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **KW), log=lines.append)
    assert "resumed at step 4" in lines
    assert (out / "ckpt" / "8.damaged").is_dir()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # the torn line is gone
    assert [r["step"] for r in recs] == [4, 8, 8]
    _same_model(out, ref)


def test_a_changed_setting_is_refused_naming_it(corpus, reference):
    out, _, _ = reference
    with pytest.raises(CheckpointMismatch, match=r"setting batch=4 differs from the run in this folder: 2; keep it "
                                                 r"to resume, or use another --out"):
        pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **{**KW, "batch": 4}), log=lambda m: None)


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes(corpus, reference, tmp_path, monkeypatch):
    import collections

    from rwkvjax.io import checkpoint
    from rwkvjax.io.checkpoint import SaveFailed
    ref, _, _ = reference
    out = tmp_path / "full"
    usage = collections.namedtuple("usage", "total used free")
    real = checkpoint.shutil.disk_usage
    with monkeypatch.context() as mp:  # the disk fills up after the first checkpoint
        mp.setattr(checkpoint.shutil, "disk_usage", lambda p: usage(*real(p)[:2], 0))
        with pytest.raises(SaveFailed, match=r"saving step 8 failed \(No space left on device.*newest saved step "
                                             r"is 4"):
            pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **KW), log=lambda m: None)
    lines = []
    pretrain(PretrainConfig(out=str(out), corpus=(str(corpus),), **KW), log=lines.append)
    assert "resumed at step 4" in lines
    _same_model(out, ref)
