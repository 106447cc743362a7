"""No request can take the server down or learn what is not its own, driven by the official `openai` client on
127.0.0.1: an out-of-range or malformed field is a 400 naming it while other clients' streams run on; an unknown
state is a 404 that names nothing but the name; the key is taken as `Bearer` in any case or `x-api-key`."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
import urllib.request

import openai
import pytest

from tests.serve.conftest import running_server
from tests.serve.test_server import _post, client

STREAM_TOKENS = 1500  # long enough to be running when the bad requests are answered


@pytest.fixture(scope="module")
def never_ends(small_model):
    """The small model with end-of-text (id 0) scoring 0 while the best of 255 random logits is above it: greedy
    streams run to max_tokens."""
    params = small_model.params
    return dataclasses.replace(small_model, params=dataclasses.replace(params, head=params.head.at[:, 0].set(0.0)))


def _health(url) -> dict:
    return json.loads(urllib.request.urlopen(url + "/health", timeout=60).read())


def test_out_of_range_fields_are_400_while_other_streams_complete(never_ends):
    with running_server(never_ends, max_batch=8) as url:
        c = client(url)
        started = threading.Barrier(4, timeout=300)

        def stream(i):
            chunks = c.completions.create(model="base", prompt=f"stream {i}: ", max_tokens=STREAM_TOKENS,
                                          temperature=0, stream=True, stream_options={"include_usage": True})
            got, first = [], True
            for ch in chunks:
                got.append(ch)
                if first and ch.choices and ch.choices[0].text:
                    first = False
                    started.wait()  # every stream is generating before the bad requests are sent
            return got

        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            streams = [ex.submit(stream, i) for i in range(3)]
            started.wait()
            bad = [({"extra_body": {"top_k": 2**31}}, "top_k"), ({"seed": 2**64}, "seed"),
                   ({"seed": -2**63 - 1}, "seed"), ({"max_tokens": 2**31}, "max_tokens"),
                   ({"extra_body": {"top_k": 2**40}, "stream": True}, "top_k")]
            for kw, field in bad:
                with pytest.raises(openai.BadRequestError) as e:
                    c.completions.create(model="base", prompt="x", **{"max_tokens": 4, **kw})
                assert e.value.status_code == 400 and e.value.body["param"] == field, kw
                assert field in e.value.body["message"]
            with pytest.raises(openai.BadRequestError) as e:
                c.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}],
                                          seed=2**63, max_tokens=4)
            assert e.value.body["param"] == "seed"
            assert _health(url)["running"] == 3  # the streams were in flight while the bad requests were refused
            for f in streams:
                chunks = f.result(timeout=600)
                text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
                assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
                assert chunks[-1].usage.completion_tokens == STREAM_TOKENS and text
        health = _health(url)
        assert health["errors"] == 0 and health["running"] == 0


@pytest.mark.parametrize("raw, param", [
    (b'{"model": "base", "prompt": "x", "seed": %s}' % (b"9" * 5000), "seed"),
    (b'{"model": "base", "prompt": "x", "temperature": 1e400}', "temperature"),
    (b'{"model": "base", "prompt": "x\\ud800"}', "prompt"),
    (b'{"model": "base", "prompt": "x", "user": %s}' % (b"[" * 50000 + b"]" * 50000), None),
    (b'{"model": "base", "prompt": "x", "top_k": 1e300}', "top_k"),
])
def test_malformed_completions_are_400_never_500(server, raw, param):
    st, _, e = _post(server, "/v1/completions", raw)
    assert st == 400 and e["error"]["param"] == param and e["error"]["type"] == "invalid_request_error", e


@pytest.mark.parametrize("role", [["user"], {"a": 1}, 7, None])
def test_an_unhashable_or_non_string_role_is_400(server, role):
    body = json.dumps({"model": "base", "messages": [{"role": role, "content": "x"}]}).encode()
    st, _, e = _post(server, "/v1/chat/completions", body)
    assert st == 400 and e["error"]["param"] == "messages[0].role", e


def test_an_unknown_state_is_a_404_naming_only_the_name(server, store_dir):
    with pytest.raises(openai.NotFoundError) as e:
        client(server).completions.create(model="no-such-state", prompt="x", max_tokens=2)
    message = e.value.body["message"]
    assert "'no-such-state'" in message and e.value.body["code"] == "model_not_found"
    assert str(store_dir) not in message and "proj" not in message  # neither the folder nor other states


def test_the_key_in_any_bearer_case_or_x_api_key_and_health_without_it(small_model):
    with running_server(small_model, api_key="sekrit") as url:
        for headers in [{"Authorization": "bearer sekrit"}, {"Authorization": "BEARER sekrit"},
                        {"x-api-key": "sekrit"}]:
            req = urllib.request.Request(url + "/v1/models", headers=headers)
            assert json.loads(urllib.request.urlopen(req, timeout=30).read())["data"][0]["id"] == "base"
        assert client(url, api_key="sekrit").models.list().data[0].id == "base"
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="sekri").models.list()
        assert _health(url) == {"status": "ok"}
        req = urllib.request.Request(url + "/health", headers={"x-api-key": "sekrit"})
        details = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert details["status"] == "ok" and "running" in details and details["model"] == "small-test-model"
