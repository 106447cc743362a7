"""`GET /metrics` (Prometheus text format, one registry per server) and each reply's speed in its `usage`; with
the official `openai` client against a server of its own (the counts start at zero)."""

from __future__ import annotations

import urllib.error
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rwkvjax.serve.metrics import CONVERSATION_LABEL, Metrics, decode_figures, state_label
from tests.serve.conftest import running_server

KEY = "metrics-key"


def _scrape(url: str, key: str | None = KEY) -> tuple[int, str, dict]:
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("content-type", ""), _samples(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), {}


def _samples(text: str) -> dict:
    """{(sample name, sorted label items): value} of an exposition `text`, parsed by prometheus_client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def keyed_server(small_model, store_dir):
    with running_server(small_model, states=str(store_dir), max_batch=4, api_key=KEY) as url:
        yield url


def test_metrics_after_two_requests(keyed_server):
    c = openai.OpenAI(base_url=keyed_server + "/v1", api_key=KEY, max_retries=0, timeout=120)
    # greedy from "x = " the small model does not stop within 5 tokens (test_server's curl test relies on it)
    a = c.completions.create(model="base", prompt="x = ", max_tokens=5, temperature=0)
    chunks = list(c.completions.create(model="proj", prompt="y = ", max_tokens=4, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    b = chunks[-1]
    status, ctype, m = _scrape(keyed_server)
    assert status == 200 and ctype.startswith("text/plain")
    assert m[("rwkvjax_requests_total", (("route", "/v1/completions"), ("status", "200")))] == 2
    assert m[("rwkvjax_prompt_tokens_total", ())] == a.usage.prompt_tokens + b.usage.prompt_tokens
    assert m[("rwkvjax_completion_tokens_total", ())] == a.usage.completion_tokens + b.usage.completion_tokens == 9
    assert m[("rwkvjax_time_to_first_token_seconds_count", ())] == 2
    # a gap between every two consecutive tokens of one reply
    assert m[("rwkvjax_inter_token_latency_seconds_count", ())] == (5 - 1) + (4 - 1)
    assert m[("rwkvjax_state_requests_total", (("state", "base"),))] == 1
    assert m[("rwkvjax_state_requests_total", (("state", "proj"),))] == 1
    # both replies are done; the last one's row may not have left the batch yet (the engine frees it after the end)
    assert m[("rwkvjax_queue_depth", ())] == 0 and 0 <= m[("rwkvjax_batch_occupancy", ())] <= 1 / 4
    assert m[("rwkvjax_prefix_cache_bytes", ())] > 0  # the replies' final states were cached
    assert ("rwkvjax_prefix_cache_hits_total", ()) in m
    # each reply carries its speed
    for u in (a.usage, b.usage):
        extra = u.model_extra
        assert extra["tokens_per_second"] > 0 and extra["time_to_first_token_ms"] > 0, extra
    # an unknown model is a 404 and no label: a client cannot grow the label set with names
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="made-up-name", prompt="x", max_tokens=1)
    _, _, m = _scrape(keyed_server)
    assert not any(labels == (("state", "made-up-name"),) for _, labels in m)
    assert m[("rwkvjax_requests_total", (("route", "/v1/completions"), ("status", "404")))] == 1
    assert m[("rwkvjax_requests_total", (("route", "/metrics"), ("status", "200")))] >= 1


def test_metrics_are_behind_the_api_key(keyed_server):
    assert _scrape(keyed_server, key=None)[0] == 401
    assert _scrape(keyed_server, key="wrong")[0] == 401


def test_each_server_has_its_own_registry():
    one, two = Metrics(lambda: {}), Metrics(lambda: {"running": 2, "max_batch": 8, "waiting": 3, "prefilling": 1})
    one.started("proj")
    s1, s2 = _samples(one.render().decode()), _samples(two.render().decode())
    assert s1[("rwkvjax_state_requests_total", (("state", "proj"),))] == 1
    assert ("rwkvjax_state_requests_total", (("state", "proj"),)) not in s2
    assert s2[("rwkvjax_batch_occupancy", ())] == 0.25 and s2[("rwkvjax_queue_depth", ())] == 4


def test_conversation_states_share_one_label():
    assert state_label("conv/base/s1") == state_label("conv/proj/s2") == CONVERSATION_LABEL
    assert state_label("proj") == "proj" and state_label("conversation") == "conversation"


class _Job:
    def __init__(self, enqueued, first, last, n):
        self.enqueued, self.first_token_at, self.last_token_at, self.generated = enqueued, first, last, [1] * n


def test_decode_figures():
    assert decode_figures(_Job(10.0, 10.5, 12.5, 5)) == {"time_to_first_token_ms": 500.0, "tokens_per_second": 2.0}
    assert decode_figures(_Job(10.0, 10.5, 10.5, 1)) == {"time_to_first_token_ms": 500.0, "tokens_per_second": None}
    assert decode_figures(_Job(10.0, None, None, 0)) == {"time_to_first_token_ms": None, "tokens_per_second": None}
