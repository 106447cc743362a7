"""--ttt's work is bounded: one place in the tuning queue per conversation (a newer turn replaces the waiting
older one), a fixed number of places (a new conversation's request gets 429 with Retry-After when all are
taken; a turn that finds none is skipped in one counted warning line), and a stop discards what waits, ends the
running turn and writes nothing after it; the stored conversations are capped (least recently tuned evicted)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest

from rwkvjax.io.states import StateStore
from rwkvjax.serve.ttt import ConversationTuner, TTTSettings, TuningQueue
from tests.serve.conftest import running_server

BOUND_S = 60  # every wait in these tests ends by this; the readiness signals come far sooner


class _Blocking:
    """A `tune` that records its calls and holds the first until released (or stopped)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.saw_stop = threading.Event()

    def __call__(self, name, *args, stop):
        self.calls.append((name, *args))
        self.entered.set()
        deadline = time.monotonic() + BOUND_S
        while not self.release.is_set() and time.monotonic() < deadline:
            if stop.wait(0.05):
                self.saw_stop.set()
                return None
        return {"conversation": name, "seconds": 1.0}


def test_the_queue_is_bounded_and_coalesced_per_conversation(caplog):
    tune = _Blocking()
    results = []
    q = TuningQueue(tune, max_queued=2, on_result=results.append)
    try:
        assert q.submit("a", "turn 1")
        assert tune.entered.wait(BOUND_S)  # a's first turn is running; the queue is empty
        assert q.submit("a", "turn 2") and q.submit("a", "turn 3")  # one place: turn 3 replaced turn 2
        assert q.stats()["queued"] == 1 and q.coalesced == 1
        assert q.submit("b", "turn 1")
        assert q.admits("a") and q.admits("b") and not q.admits("c")  # full, but a waiting one may replace
        with caplog.at_level(logging.WARNING, logger="rwkvjax.serve.ttt"):
            assert not q.submit("c", "turn 1")
        assert q.skipped == 1 and len(caplog.records) == 1 and "skipped" in caplog.records[0].getMessage()
        tune.release.set()
        assert q.wait("a", BOUND_S) < BOUND_S and q.wait("b", BOUND_S) < BOUND_S
        assert tune.calls == [("a", "turn 1"), ("a", "turn 3"), ("b", "turn 1")]
        assert [r["conversation"] for r in results] == ["a", "a", "b"] and not q.pending
    finally:
        q.stop()


def test_stop_discards_waiting_turns_and_ends_the_running_one_promptly(caplog):
    tune = _Blocking()
    q = TuningQueue(tune, max_queued=8, on_result=lambda r: None)
    q.submit("a", "turn 1")
    assert tune.entered.wait(BOUND_S)
    for name in ("b", "c", "d"):
        q.submit(name, "turn 1")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rwkvjax.serve.ttt"):
        q.stop()
    assert time.monotonic() - t0 < 10 and tune.saw_stop.is_set()  # the running turn saw the stop at once
    assert [c[0] for c in tune.calls] == ["a"] and q.discarded == 3
    assert any("3 waiting turn(s)" in r.getMessage() for r in caplog.records)
    assert q.wait("b", BOUND_S) == 0.0 and not q.pending  # nobody waits for discarded work
    assert not q.submit("e", "turn 1") and not q.admits("e")


@pytest.fixture(scope="module")
def tuner_parts(small_model):
    from rwkvjax.model.params import params_hash
    from rwkvjax.text.tokenizer import tokenizer_id
    return small_model, params_hash(small_model.params), tokenizer_id(small_model.tokenizer)


def _tuner(parts, store, **settings) -> ConversationTuner:
    model, base_hash, tok_id = parts
    return ConversationTuner(model.arch, model.params, model.tokenizer, store, base_hash=base_hash,
                             tokenizer_id=tok_id, canaries={"c": "a canary text for the gate " * 8},
                             settings=TTTSettings(steps=1, ctx_len=32, windows=1, **settings))


def test_a_turn_stopped_before_its_write_writes_nothing_and_states_are_capped(tuner_parts, tmp_path, caplog):
    store = StateStore(tmp_path / "states")
    tuner = _tuner(tuner_parts, store, max_conversations=2, wait_s=600)  # the first turn compiles the steps
    try:
        stopped = threading.Event()
        stopped.set()
        assert tuner.tune("conv/base/x", None, "User: hi\n\nAssistant: hello\n\n", stop=stopped) is None
        assert store.records() == []
        with caplog.at_level(logging.INFO, logger="rwkvjax.serve.ttt"):
            for i in range(3):
                assert tuner.submit(f"conv/base/c{i}", None, f"User: turn {i}\n\nAssistant: ok\n\n")
                assert tuner.wait(f"conv/base/c{i}") < tuner.s.wait_s
        assert sorted(r.name for r in store.records()) == ["conv/base/c1", "conv/base/c2"]
        assert tuner.stats()["evicted"] == 1
        assert [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()] == [
            "evicted 1 conversation state(s), the least recently tuned beyond --ttt-max-conversations 2: "
            "conv/base/c0"]
    finally:
        tuner.stop()
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "states").iterdir()}
    assert not tuner.submit("conv/base/c9", None, "User: late\n\nAssistant: no\n\n")  # after stop: refused
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "states").iterdir()} == before


def _chat(url, session, timeout=300):
    body = json.dumps({"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                       "temperature": 0, "session": session}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_a_full_tuning_queue_is_429_with_retry_after_and_stop_discards_it(small_model, tmp_path, monkeypatch):
    tune = _Blocking()
    monkeypatch.setattr(ConversationTuner, "tune", lambda self, name, *args, stop: tune(name, *args, stop=stop))
    StateStore(tmp_path / "states")
    t_stop = None
    with running_server(small_model, states=str(tmp_path / "states"), ttt=True, ttt_queue=1,
                        memory=False) as url:
        assert _chat(url, "s1")[0] == 200
        assert tune.entered.wait(BOUND_S)  # s1 is being tuned (and stays so)
        assert _chat(url, "s2")[0] == 200  # s2 takes the one place
        status, headers, err = _chat(url, "s3")
        assert status == 429 and int(headers["Retry-After"]) >= 1, err
        assert err["error"]["param"] == "session" and err["error"]["code"] == "rate_limit_exceeded"
        with urllib.request.urlopen(url + "/health", timeout=BOUND_S) as r:
            ttt = json.loads(r.read())["ttt"]
        assert ttt["queued"] == 1 and ttt["running"] is True and ttt["max_queued"] == 1
        t_stop = time.monotonic()
    assert time.monotonic() - t_stop < 30 and tune.saw_stop.is_set()
    assert [c[0] for c in tune.calls] == ["conv/base/s1"]  # s2's waiting turn was discarded, not tuned
