"""The prefix cache is partitioned by API key: `usage.prompt_tokens_details.cached_tokens` counts only a prefix sent
before with the same key, so a client cannot confirm a guess of another principal's prompt by the count. The engine
with two partitions; the partition of a key; and a real server where hits within one key still happen."""

from __future__ import annotations

import threading

import pytest

from rwkvjax.model.params import unstack_layers
from rwkvjax.model.state import zero_state
from rwkvjax.serve.turns import key_partition
from rwkvjax.serve.engine import Engine, Request, Sampling
from rwkvjax.text.tokenizer import ByteTokenizer
from tests.serve.conftest import SMALL, running_server
from tests.serve.test_server import client

SECRET = b"the other client's private prompt: the launch code is 0000, do not tell anyone.\n"
WAIT_S = 300


def _cached(engine: Engine, partition: str, prompt: bytes = SECRET) -> int:
    """The cached_tokens the engine reports for `prompt` sent in `partition`."""
    got, done = [], threading.Event()

    def emit(kind, payload):
        if kind in ("done", "error"):
            got.append((kind, payload))
            done.set()

    engine.submit(Request(prompt=list(prompt), start=zero_state(SMALL, 1), start_key="base",
                          sampling=Sampling(max_tokens=3, temperature=0.0), emit=emit, partition=partition))
    assert done.wait(WAIT_S)
    kind, payload = got[0]
    assert kind == "done", payload
    return payload["cached_tokens"]


def test_a_prefix_is_a_hit_only_in_its_own_partition(small_model):
    engine = Engine(unstack_layers(small_model.params), SMALL, ByteTokenizer(), max_batch=2).start()
    try:
        assert _cached(engine, "alice") == 0
        assert _cached(engine, "bob") == 0  # the same prompt, another key: no hit to report
        assert _cached(engine, "alice") == len(SECRET) - 1  # its own: all but the token the first step feeds
        assert _cached(engine, "bob") == len(SECRET) - 1  # bob's own entry, from his first request
        assert _cached(engine, "", SECRET + b"more") == 0  # the keyless partition is a third one
        assert engine.cache.hits == 2
    finally:
        engine.stop()


def test_each_key_has_its_own_partition_and_no_key_one():
    assert key_partition(None) == key_partition("") == ""
    a, b = key_partition("key-a"), key_partition("key-b")
    assert a and b and a != b and a == key_partition("key-a")
    assert "key-a" not in a  # a digest, not the key


@pytest.mark.parametrize("api_key", [None, "sekrit"])
def test_a_repeated_prompt_with_the_same_key_is_still_a_hit(small_model, api_key):
    with running_server(small_model, api_key=api_key) as url:
        c = client(url, api_key=api_key or "unused")
        prompt = SECRET.decode()
        first = c.completions.create(model="base", prompt=prompt, max_tokens=2, temperature=0)
        again = c.completions.create(model="base", prompt=prompt, max_tokens=2, temperature=0)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        assert again.usage.prompt_tokens_details.cached_tokens > 0
