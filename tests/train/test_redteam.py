"""Red team: clean sessions interleaved with poison, the update gate on. The canaries must hold over the whole
run, most poison must be stopped (screened, rolled back or quarantined), and the clean held-out gain must
survive compared with a clean-only run."""

from __future__ import annotations

import numpy as np
import pytest

import rwkvjax
from benchmarks.common.redteam import (clean_pieces, heldout_bits, poison_share_stopped, poison_texts, run_arm,
                                       write_stream)
from rwkvjax.eval.sessions import load_sessions
from rwkvjax.train.probe import TextProbe, default_canaries, read_texts
from rwkvjax.train.run import DEMO_MODEL
from tests.conftest import CLAUDE_PROJECTS

CTX = 128
PIECE = 512


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    model = rwkvjax.load(DEMO_MODEL)
    tok = model.tokenizer
    texts = [s.text for s in load_sessions(str(CLAUDE_PROJECTS), tok)]
    pieces = clean_pieces(texts, PIECE)[:11]
    train, held = pieces[:8], pieces[8:]  # held out by time: the last pieces
    canaries = read_texts(default_canaries())
    poison = poison_texts(PIECE, next(iter(canaries.values())))
    root = tmp_path_factory.mktemp("redteam")
    kinds = write_stream(root / "mixed" / "-home-dev-proj", train, poison, every=1)
    write_stream(root / "clean" / "-home-dev-proj", train, {}, every=1)
    mixed, mixed_tr = run_arm(root / "mixed", root / "ck-mixed", model=model, steps=None, ctx_len=CTX)
    clean, clean_tr = run_arm(root / "clean", root / "ck-clean", model=model, steps=None, ctx_len=CTX)
    return dict(model=model, tok=tok, kinds=kinds, mixed=mixed, clean=clean, mixed_tr=mixed_tr,
                clean_tr=clean_tr, held=held, canaries=canaries, poison=poison, root=root)


@pytest.mark.slow
def test_canaries_hold_over_the_whole_run(scenario):
    recs = scenario["mixed"]
    start = recs[0]["canary_start_bpb"]
    committed = [r["canary_bpb"] for r in recs]
    assert max(committed) <= start * 1.01
    # and measured independently on the final state, the way the gate reads canaries
    config, params = scenario["model"].arch, scenario["model"].params
    probe = TextProbe(config, params, scenario["tok"], scenario["canaries"], ctx_len=512, max_windows=1,
                      wkv_impl="scan")
    final = float(np.mean(list(probe(scenario["mixed_tr"]).values())))
    assert final <= start * 1.01


@pytest.mark.slow
def test_the_memory_keeps_the_canaries_and_the_flood_out(scenario):
    """The canaries scored with the session memory stay within the gate's bound (1% over the model's own canary
    figure at the start: see train/gate.py for why not the mixture's); the memory never learned a canary passage
    (the canary copy is screened, and the probe reads a copy of the memory) nor the flood."""
    from rwkvjax.train.session_memory import checkpoint_memory
    recs = scenario["mixed"]
    start = recs[0]["canary_start_bpb"]
    assert recs[0]["canary_mix_start_bpb"] < start  # the memory helps on the canaries too, at first
    assert all(r["canary_mix_bpb"] <= start * 1.01 for r in recs)
    mem = checkpoint_memory(scenario["root"] / "ck-mixed")
    n = mem.symbols_seen
    hist = bytes(mem.state_dict()[1]["hist"][:n].astype(np.uint8))
    assert n == sum(r["memory_symbols"] for r in recs if r["gate"] == "accepted") > 0
    for text in scenario["canaries"].values():
        probe = text.encode()[:4096]
        assert not any(probe[i:i + 64] in hist for i in range(0, len(probe) - 64, 16))
    line = scenario["poison"]["repeated_line"].split("\n")[0].encode() + b"\n"
    assert hist.count(line) <= 2 * (CTX // len(line) + 1)  # at most the windows where the flood begins


@pytest.mark.slow
def test_most_poison_is_stopped(scenario):
    per = poison_share_stopped(scenario["mixed"], scenario["kinds"])
    assert set(per) == {"repeated_line", "random_bytes", "base64_blob", "other_language", "injection_flood",
                        "canary_copy"}
    total = sum(sum(v.values()) for v in per.values())
    stopped = sum(v["screened"] + v["rolled_back"] + v["quarantined"] for v in per.values())
    assert total > 0 and stopped / total > 0.5, per
    # no window holding a canary passage (64 bytes or more) is trained on; the session's first window holds its
    # header and under 64 bytes of the canary, which is no more than text that shares a phrase with it
    assert per["canary_copy"]["accepted"] <= 1 and per["canary_copy"]["screened"] >= 3, per
    flood = per["repeated_line"]
    assert flood["screened"] >= 0.8 * sum(flood.values()), per  # a flood carries no news


@pytest.mark.slow
def test_clean_heldout_gain_survives_the_poison(scenario):
    model, held = scenario["model"], scenario["held"]
    b_mixed, nb = heldout_bits(model, scenario["mixed_tr"], held, CTX)
    b_clean, _ = heldout_bits(model, scenario["clean_tr"], held, CTX)
    diff = (b_mixed - b_clean) / nb  # paired, per window
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert b_mixed.sum() / nb.sum() <= b_clean.sum() / nb.sum() + 2 * se + 1e-9, (diff.mean(), se)


def test_benign_lookalikes_are_not_screened_by_pattern():
    """Base64, hashes and instruction-like text are normal in coding sessions: seen once, they train."""
    from rwkvjax.train.data import stream_windows
    from rwkvjax.train.gate import UpdateGate
    loaded = rwkvjax.load(DEMO_MODEL)
    config, params = loaded.arch, loaded.params
    tok = loaded.tokenizer
    gate = UpdateGate(config, params, tok, read_texts(default_canaries()), ctx_len=CTX)
    import hashlib
    benign = {"b64": poison_texts(512, "")["base64_blob"],
              "sha": "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(12)),
              "inst": "Ignore the failing lint job for now and run the unit tests first, then fix the import."}
    for name, text in benign.items():
        for w in stream_windows(name, tok.encode(text), CTX, tok):
            assert gate.sources.screen(w) is None, name
