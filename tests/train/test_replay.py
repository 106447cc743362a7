import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from rwkvjax.errors import DataError
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings

nlls = st.floats(-5, 20, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.lists(nlls, max_size=40))
def test_capacity_and_lowest_priority_is_evicted(cap, offers):
    buf = ReplayBuffer(ReplaySettings(capacity=cap))
    kept: dict[int, float] = {}
    for k, p in enumerate(offers):
        before = dict(zip(buf.seq.tolist(), buf.priority.tolist()))
        buf.add([k], p)
        assert len(buf) <= cap
        after = dict(zip(buf.seq.tolist(), buf.priority.tolist()))
        pool = {**before, k: p}
        dropped = set(pool) - set(after)
        assert len(dropped) == (len(pool) > cap)
        for d in dropped:
            assert pool[d] <= min(after.values())
        kept = after
    # the buffer holds the top-`cap` priorities of everything offered
    assert sorted(kept.values(), reverse=True) == sorted(offers, reverse=True)[:cap]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.lists(nlls, max_size=30))
def test_fifo_evicts_the_oldest(cap, offers):
    buf = ReplayBuffer(ReplaySettings(capacity=cap, admission="fifo"))
    for k, p in enumerate(offers):
        buf.add([k], p)
        assert len(buf) <= cap
    assert sorted(int(t[0]) for t in buf.tokens) == list(range(len(offers)))[-cap:]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.1, 10), min_size=2, max_size=20), st.integers(0, 2**32 - 1),
       st.sampled_from([0.0, 0.6, 1.0]))
def test_sampling_frequencies_match_priority_power_alpha(prios, seed, alpha):
    buf = ReplayBuffer(ReplaySettings(capacity=len(prios), alpha=alpha), seed=seed)
    for k, p in enumerate(prios):
        buf.add([k], p)
    target = (np.asarray(prios) + buf.settings.eps) ** alpha
    target /= target.sum()
    np.testing.assert_allclose(buf.probabilities(), target, rtol=1e-12)
    n = 20000
    idx, w = buf.sample(n)
    counts = np.bincount(idx, minlength=len(prios))
    expected = buf.probabilities() * n
    assert chisquare(counts, expected).pvalue > 1e-4
    assert np.isfinite(w).all() and (w > 0).all() and (w <= 1).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20), st.floats(0, 1))
def test_importance_weights_finite_and_normalised(prios, beta):
    buf = ReplayBuffer(ReplaySettings(capacity=len(prios), eps=1e-12))
    for k, p in enumerate(prios):
        buf.add([k], p)
    idx, w = buf.sample(200, beta=beta)
    assert np.isfinite(w).all() and (w > 0).all() and (w <= 1 + 1e-12).all()
    P = buf.probabilities()
    full = (len(P) * P) ** -beta
    np.testing.assert_allclose(w, full[idx] / full.max(), rtol=1e-6)


def test_reducible_surprise_and_refresh_after_replay():
    buf = ReplayBuffer(ReplaySettings(capacity=2, priority="reducible"))
    buf.add([1, 2, 3], nll=5.0, nll_frozen=4.9)  # hash-like: high NLL, nothing to learn
    buf.add([4, 5, 6], nll=2.0, nll_frozen=0.5)
    assert buf.priority.tolist() == pytest.approx([0.1, 1.5])
    assert buf.add([7], nll=3.0, nll_frozen=2.0) is not None  # 1.0 > 0.1: evicts the hash-like window
    assert sorted(buf.priority.tolist()) == pytest.approx([1.0, 1.5])
    buf.update([0, 1], nll=[0.6, 0.4], nll_frozen=[0.5, 0.5])
    assert buf.priority.tolist() == pytest.approx([0.1, -0.1]) and buf.replays.tolist() == [1, 1]
    with pytest.raises(ValueError, match="nll_frozen"):
        buf.add([1], nll=1.0)


def test_checkpoint_roundtrip_mode_0600_and_rng_continues(tmp_path):
    """Through what training stores: `to_dict` in a checkpoint step's host JSON, read back by `from_dict`."""
    from rwkvjax.io.checkpoint import TrainCheckpointer
    buf = ReplayBuffer(ReplaySettings(capacity=3), seed=7)
    for k in range(5):
        buf.add(list(range(k + 1)), float(k), text=f"window {k} [REDACTED:key]")
    buf.sample(4)
    with TrainCheckpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save_items(1, {"trainable": {"s": np.zeros(2, np.float32)}}, {"replay": buf.to_dict()})
    files = [p for p in (tmp_path / "ck" / "1" / "host").rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in files)
    host = TrainCheckpointer(tmp_path / "ck", read_only=True).restore_host(1)
    back = ReplayBuffer.from_dict(host["replay"])
    assert back.to_dict() == buf.to_dict()
    assert [t.tolist() for t in back.tokens] == [t.tolist() for t in buf.tokens]
    a, b = buf.sample(10), back.sample(10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_bad_inputs():
    buf = ReplayBuffer(ReplaySettings(capacity=2))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        buf.add([], 1.0)
    with pytest.raises(ValueError, match="finite"):
        buf.add([1], float("nan"))
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1)
    with pytest.raises(ValueError, match="admission"):
        ReplaySettings(admission="lifo")
    with pytest.raises(ValueError, match="malformed"):
        ReplayBuffer.from_dict({"settings": {}})
    d = ReplayBuffer(ReplaySettings(capacity=2)).to_dict()
    d["texts"] = ["x"]
    with pytest.raises(ValueError, match="'texts'"):
        ReplayBuffer.from_dict(d)


def test_a_step_from_before_the_buffer_held_its_windows_restores_them():
    """Such steps kept the windows beside the buffer, under "replay_windows"; they read back as the same buffer."""
    from rwkvjax.train.data import Window
    buf = ReplayBuffer(ReplaySettings(capacity=4), seed=3)
    for i in range(3):
        buf.add(Window(f"s{i}", np.arange(i, i + 5, dtype=np.int32), 5, 5), float(i), 0.5 * i)
    d = buf.to_dict()
    legacy = {"replay": {k: v for k, v in d.items() if k not in ("windows", "nll_frozen")},
              "replay_windows": [{"window": w, "nll_frozen": f} for w, f in zip(d["windows"], d["nll_frozen"])]}
    assert ReplayBuffer.from_host(legacy).to_dict() == d
    assert ReplayBuffer.from_host({"replay": d}).to_dict() == d
    assert ReplayBuffer.from_host({"replay": None}) is None
    with pytest.raises(DataError, match="step 7"):  # without the windows beside it, the old layout is malformed
        ReplayBuffer.from_host({"replay": legacy["replay"]}, source="step 7")
