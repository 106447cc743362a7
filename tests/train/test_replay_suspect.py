"""Issue 25 item 3, training side: a window holding a secret (a redaction marker, or a high-entropy run that got
past redaction) may not rank higher in the replay buffer because of its surprise. A key is the least predictable
text of a session: by surprise alone such windows got 2.1x the average replay priority."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rwkvjax.train.replay import ReplayBuffer, ReplaySettings, high_entropy_runs, sensitive

_rng = random.Random(25)
API_KEY = "sk-proj-" + "".join(_rng.choice(string.ascii_letters + string.digits) for _ in range(40))
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8"

SUSPECT_TEXTS = {
    "marker": "the deploy key is [REDACTED:pem-private-key] and the rest of the session goes on",
    "api key": f"export OPENAI_KEY={API_KEY}\n",
    "pem body": f"{PEM_BODY}\n{PEM_BODY[::-1]}\n",
}
ORDINARY = ("def compute(x):\n    return ReplayBufferSettings(capacity=x)  # see /Users/me/projects/rwkv-jax/README.md "
            "commit 3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c id 123e4567-e89b-12d3-a456-426614174000")


def test_the_detector_flags_keys_and_markers_not_identifiers_paths_hashes_or_ids():
    for text in SUSPECT_TEXTS.values():
        assert sensitive(text), text
    assert not sensitive(ORDINARY) and high_entropy_runs(ORDINARY) == []
    assert not sensitive(None) and not sensitive("")
    [(s, e)] = high_entropy_runs(SUSPECT_TEXTS["api key"])
    assert SUSPECT_TEXTS["api key"][s:e].endswith(API_KEY)
    # random tokens of every usual alphabet and length are found (the few that happen to read as words aside)
    rng = random.Random(0)
    toks = ["".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))
            for n in (24, 32, 40, 64) for _ in range(50)]
    assert np.mean([sensitive(f"token {t} here") for t in toks]) > 0.9


@pytest.mark.parametrize("kind", sorted(SUSPECT_TEXTS))
def test_a_suspect_window_with_the_highest_surprise_ranks_no_higher_than_the_median_and_goes_first(kind):
    buf = ReplayBuffer(ReplaySettings(capacity=6))
    for k, nll in enumerate((1.0, 2.0, 3.0, 4.0, 5.0)):
        buf.add([k], nll, text=f"{ORDINARY} {k}")
    i = buf.add([99], 50.0, text=SUSPECT_TEXTS[kind])  # ten times the surprise of any other window
    assert i == 5
    assert buf.priority[i] == pytest.approx(3.0)  # the median of the ordinary windows, not 50
    P = buf.probabilities()
    assert P[i] <= np.median(P) + 1e-15
    # the buffer is full: the next ordinary window, however unsurprising, replaces the suspect one first
    j = buf.add([100], 0.5, text=f"{ORDINARY} new")
    assert j == i and 99 not in [int(t[0]) for t in buf.tokens]
    assert sorted(buf.priority.tolist()) == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_suspect_candidate_for_a_full_buffer_of_ordinary_windows_is_the_one_dropped():
    buf = ReplayBuffer(ReplaySettings(capacity=3))
    for k in range(3):
        buf.add([k], 1.0 + k, text=ORDINARY)
    assert buf.add([9], 100.0, text=SUSPECT_TEXTS["marker"]) is None
    assert buf.rejected == 1 and sorted(int(t[0]) for t in buf.tokens) == [0, 1, 2]


def test_a_refresh_after_replay_cannot_lift_a_suspect_window_either():
    buf = ReplayBuffer(ReplaySettings(capacity=8))
    for k, nll in enumerate((1.0, 2.0, 3.0)):
        buf.add([k], nll, text=ORDINARY)
    i = buf.add([7], 0.5, text=SUSPECT_TEXTS["api key"])
    assert buf.priority[i] == 0.5  # below the median: its own value stands
    buf.update([i, 0], [40.0, 6.0])  # replayed: more surprising than ever; window 0 got harder too
    assert buf.priority[i] == pytest.approx(3.0) and buf.priority[0] == 6.0  # median of 6, 2, 3
    # the ordinary windows become easier: the cap follows their median down
    buf.update([0, 1, 2], [0.1, 0.2, 0.3])
    assert buf.priority[i] == pytest.approx(0.2)


def test_a_buffer_saved_before_the_cap_is_capped_when_read():
    buf = ReplayBuffer(ReplaySettings(capacity=4))
    for k, nll in enumerate((1.0, 2.0, 3.0)):
        buf.add([k], nll, text=ORDINARY)
    buf.add([5], 1.0, text=SUSPECT_TEXTS["pem body"])
    d = buf.to_dict()
    d["priority"][3] = 80.0  # as an older version stored it: its surprise, uncapped
    back = ReplayBuffer.from_dict(d)
    assert back.priority.tolist() == [1.0, 2.0, 3.0, 2.0] and back.suspect == [False] * 3 + [True]


offers = st.lists(st.tuples(st.floats(-5, 20, allow_nan=False), st.booleans()), max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), offers, st.integers(0, 2**32 - 1))
def test_suspect_windows_stay_at_or_below_the_median_and_are_evicted_before_ordinary_ones(cap, offs, seed):
    buf = ReplayBuffer(ReplaySettings(capacity=cap), seed=seed)
    for k, (nll, suspect) in enumerate(offs):
        full = len(buf) == cap
        was_suspect = {int(t[0]): s for t, s in zip(buf.tokens, buf.suspect)}
        buf.add([k], nll, text=SUSPECT_TEXTS["marker"] if suspect else f"{ORDINARY} {k}")
        if full and any(was_suspect.values()) and not suspect:
            # an ordinary candidate for a full buffer holding a suspect window replaces a suspect window
            gone = set(was_suspect) - {int(t[0]) for t in buf.tokens}
            assert len(gone) == 1 and was_suspect[gone.pop()]
        if k % 3 == 2:  # a replay refresh now and then
            idx, _ = buf.sample(2)
            buf.update(idx, [nll + 7.0, nll - 1.0])
        sus = np.asarray(buf.suspect, bool)
        assert len(buf) <= cap
        if (~sus).any() and sus.any():
            assert buf.priority[sus].max() <= np.median(buf.priority[~sus]) + 1e-12
    # a resumed run reads back exactly the buffer it saved (the cap, applied again on reading, moves nothing)
    assert ReplayBuffer.from_dict(buf.to_dict()).to_dict() == buf.to_dict()


def test_suspect_windows_are_held_to_the_ordinary_ones_as_soon_as_there_are_any():
    buf = ReplayBuffer(ReplaySettings(capacity=6))
    for k, nll in enumerate((1.0, 2.0, 3.0, 4.0)):
        buf.add([k], nll, text=SUSPECT_TEXTS["marker"])
    assert buf.priority.tolist() == [1.0, 2.0, 3.0, 4.0]  # no typical window yet to hold them to
    assert ReplayBuffer.from_dict(buf.to_dict()).priority.tolist() == [1.0, 2.0, 3.0, 4.0]
    buf.add([8], 2.5, text=ORDINARY)
    buf.add([9], 1.5, text=ORDINARY)
    assert buf.priority.tolist() == [1.0, 1.5, 1.5, 1.5, 2.5, 1.5]  # the lower middle of 2.5 and 1.5
    assert ReplayBuffer.from_dict(buf.to_dict()).priority.tolist() == buf.priority.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.lists(st.floats(-5, 20, allow_nan=False), max_size=40), st.integers(0, 2**32 - 1))
def test_ordinary_texts_change_nothing(cap, nlls, seed):
    """Without suspect windows the buffer is the one it was: same admissions, evictions, priorities, samples."""
    a = ReplayBuffer(ReplaySettings(capacity=cap), seed=seed)
    b = ReplayBuffer(ReplaySettings(capacity=cap), seed=seed)
    for k, nll in enumerate(nlls):
        assert a.add([k], nll) == b.add([k], nll, text=f"{ORDINARY} {k}")
        if k % 4 == 3:
            ia, _ = a.sample(3)
            ib, _ = b.sample(3)
            assert np.array_equal(ia, ib)
            a.update(ia, [nll * 2] * 3)
            b.update(ib, [nll * 2] * 3)
    assert a.priority.tolist() == b.priority.tolist() and a.seq.tolist() == b.seq.tolist()
