"""A request whose row fails in the engine (its sampler, its text, its seed or settings) fails alone, with an error
event; the requests batched with it finish with the tokens they get without it. A failure of the batched step itself
answers every request in flight, and the engine goes on serving."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from rwkvjax.memory.memory import SessionMemory
from rwkvjax.model.init import init_params
from rwkvjax.model.params import unstack_layers
from rwkvjax.model.state import zero_state
from rwkvjax.serve import engine as engine_module
from rwkvjax.serve.engine import Engine, Request, Sampling
from rwkvjax.text.tokenizer import ByteTokenizer
from tests.serve.conftest import SMALL
from tests.serve.test_mixture import small

BAD_SEED = 13
N = 12  # tokens each request samples


@pytest.fixture(scope="module")
def params():
    return unstack_layers(init_params(SMALL, 0, live_output=True))


@dataclasses.dataclass
class Outcome:
    events: list = dataclasses.field(default_factory=list)
    answered: threading.Event = dataclasses.field(default_factory=threading.Event)

    def emit(self, kind, payload):
        self.events.append((kind, payload))
        if kind in ("done", "error"):
            self.answered.set()

    @property
    def end(self):
        return self.events[-1][0]


def _run(params, cases, *, memory=False) -> tuple[list[Request], list[Outcome], int]:
    """Submits every (prompt, sampling) at once; returns the requests, what each was told, and the engine's
    error count, after every request was answered."""
    engine = Engine(params, SMALL, ByteTokenizer(), max_batch=8, memory=memory)
    outcomes = [Outcome() for _ in cases]
    reqs = []
    for (prompt, s), out in zip(cases, outcomes):
        mem = None
        if memory:
            mem = SessionMemory(small(SMALL.vocab_size))
            mem.absorb(prompt)
        reqs.append(Request(prompt=prompt, start=zero_state(SMALL, 1), start_key="base", sampling=s, emit=out.emit,
                            memory=mem))
    for r in reqs:  # queued before the engine starts: they are admitted together and share the batch
        engine.submit(r)
    engine.start()
    try:
        assert all(out.answered.wait(300) for out in outcomes), [out.events[-1:] for out in outcomes]
    finally:
        engine.stop()
    return reqs, outcomes, engine.errors


def _cases(bad: Sampling | None) -> list:
    good = [(list(b"def f(x):\n"), Sampling(max_tokens=N, temperature=1.0, seed=1)),
            (list(b"import os\n"), Sampling(max_tokens=N, temperature=0.8, top_p=0.9, seed=2)),
            (list(b"x = 1"), Sampling(max_tokens=N, temperature=0.0))]
    return good if bad is None else good[:1] + [(list(b"# bad row\n"), bad)] + good[1:]


def _check_fails_alone(params, bad: Sampling, *, memory=False):
    reqs, outcomes, errors = _run(params, _cases(bad), memory=memory)
    alone, alone_out, alone_errors = _run(params, _cases(None), memory=memory)
    assert alone_errors == 0 and all(o.end == "done" for o in alone_out)
    assert outcomes[1].end == "error" and "internal error" in outcomes[1].events[-1][1]
    assert errors == 1
    others, other_out = reqs[:1] + reqs[2:], outcomes[:1] + outcomes[2:]
    assert [o.end for o in other_out] == ["done"] * 3
    assert all(o.events[-1][1]["finish_reason"] == "length" for o in other_out)
    # the rows batched with the failed one sampled what they sample without it
    assert [r.generated for r in others] == [r.generated for r in alone]
    return outcomes[1]


class _FailingSampler(engine_module.RowSampler):
    """A host-side sampler that breaks on the first draw of the request with BAD_SEED."""

    def __init__(self, sampling, weight_V, seed):
        super().__init__(sampling, weight_V, seed)
        self.bad = seed == BAD_SEED

    def uniform(self) -> float:
        if self.bad:
            raise FloatingPointError("a sampler that fails")
        return super().uniform()


def test_a_row_whose_sampler_fails_fails_alone(params, monkeypatch):
    monkeypatch.setattr(engine_module, "RowSampler", _FailingSampler)
    _check_fails_alone(params, Sampling(max_tokens=N, temperature=1.0, seed=BAD_SEED), memory=True)


class _FailingDetokenizer(engine_module.Detokenizer):
    """Text of the request whose stop string is "BOOM" that breaks after three tokens."""

    def __init__(self, decode_bytes, stop):
        super().__init__(decode_bytes, stop)
        self.bad, self.n = "BOOM" in stop, 0

    def push(self, t):
        self.n += 1
        if self.bad and self.n == 3:
            raise UnicodeError("a detokenizer that fails")
        return super().push(t)


def test_a_row_whose_text_fails_fails_alone(params, monkeypatch):
    monkeypatch.setattr(engine_module, "Detokenizer", _FailingDetokenizer)
    bad = _check_fails_alone(params, Sampling(max_tokens=N, temperature=0.0, stop=("BOOM",)))
    assert [k for k, _ in bad.events].count("error") == 1


@pytest.mark.parametrize("bad", [Sampling(max_tokens=N, seed=2**70), Sampling(max_tokens=N, top_k=2**31),
                                 Sampling(max_tokens=N, seed=-5)],
                         ids=["seed-beyond-int64", "top_k-beyond-int32", "negative-seed"])
def test_a_row_that_cannot_be_made_is_answered_and_fails_alone(params, bad):
    """Settings the HTTP edge refuses, reaching the engine anyway: the request is answered (before, a seed beyond
    int64 left it waiting forever) and the others finish; a negative seed is a seed like any other."""
    if bad.seed == -5:
        for memory in (False, True):
            reqs, outcomes, errors = _run(params, _cases(None)[:1] + [(list(b"# neg\n"), bad)], memory=memory)
            assert errors == 0 and [o.end for o in outcomes] == ["done", "done"]
            assert len(reqs[1].generated) == N or outcomes[1].events[-1][1]["finish_reason"] == "stop"
        return
    _check_fails_alone(params, bad)


def test_a_failed_batched_step_answers_every_request_and_serving_goes_on(params, monkeypatch):
    calls = {"n": 0}
    real = engine_module.decode_step

    def breaks_once(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a step that fails")
        return real(*a, **kw)

    monkeypatch.setattr(engine_module, "decode_step", breaks_once)
    engine = Engine(params, SMALL, ByteTokenizer(), max_batch=8)
    first = [Outcome() for _ in range(3)]
    for i, out in enumerate(first):
        engine.submit(Request(prompt=list(b"abc%d" % i), start=zero_state(SMALL, 1), start_key="base",
                              sampling=Sampling(max_tokens=N, temperature=0.0), emit=out.emit))
    engine.start()
    try:
        assert all(out.answered.wait(300) for out in first)
        assert "error" in [out.end for out in first] and engine.errors == 1
        later = Outcome()
        engine.submit(Request(prompt=list(b"later"), start=zero_state(SMALL, 1), start_key="base",
                              sampling=Sampling(max_tokens=N, temperature=0.0), emit=later.emit))
        assert later.answered.wait(300) and later.end == "done"
    finally:
        engine.stop()
