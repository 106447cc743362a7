"""The OpenAI-compatible server, driven by the official `openai` client (and curl) on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.serve.conftest import running_server


def client(url, **kw):
    return openai.OpenAI(base_url=url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=120, **kw)


def _post(url, path, body: bytes, headers=None):
    req = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_models_lists_base_and_states(server):
    ids = [m.id for m in client(server).models.list().data]
    assert ids[0] == "base" and "proj" in ids


def test_completion_and_chat_with_and_without_streaming(server):
    c = client(server)
    r = c.completions.create(model="base", prompt="def main():\n", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.prompt_tokens == len(b"def main():\n") and r.usage.completion_tokens <= 12
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="base", prompt="def main():\n", max_tokens=12, temperature=0, stream=True))
    assert streamed == r.choices[0].text  # greedy: the same text either way
    m = c.chat.completions.create(model="base", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
                                  temperature=0)
    assert m.object == "chat.completion" and m.choices[0].message.role == "assistant"
    chunks = list(c.chat.completions.create(model="base", messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == m.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == m.usage.completion_tokens


def test_raw_sse_with_curl(server):
    # greedy: a sampled token 0 (end of text) would end the reply early with "stop"
    body = json.dumps({"model": "base", "prompt": "x = ", "max_tokens": 5, "stream": True, "temperature": 0})
    out = subprocess.run(["curl", "-sN", "-H", "Content-Type: application/json", "-d", body,
                          server + "/v1/completions"], capture_output=True, text=True, timeout=120).stdout
    events = [e for e in out.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_sixteen_concurrent_streams_complete(server):
    c = client(server)

    def one(i):
        n = sum(1 for ch in c.completions.create(model="base", prompt=f"item {i}: ", max_tokens=20, stream=True,
                                                  seed=i) if ch.choices and ch.choices[0].text)
        return n

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(16), timeout=300))
    assert len(results) == 16 and all(n >= 1 for n in results)


def test_batched_greedy_equals_alone(server):
    c = client(server)
    prompts = [f"line {i} says " for i in range(6)]
    alone = [c.completions.create(model="base", prompt=p, max_tokens=16, temperature=0).choices[0].text
             for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        together = list(ex.map(lambda p: c.completions.create(model="base", prompt=p, max_tokens=16,
                                                              temperature=0).choices[0].text, prompts))
    assert together == alone


def test_seeded_sampling_is_reproducible(server):
    c = client(server)
    run = lambda: c.completions.create(model="base", prompt="a", max_tokens=16, temperature=1.0, top_p=0.9,
                                       seed=7, presence_penalty=0.5, frequency_penalty=0.5).choices[0].text
    assert run() == run()


def test_a_stop_string_ends_the_reply_streamed_or_not(server):
    c = client(server)
    kw = dict(model="base", prompt="def main():\n", max_tokens=24, temperature=0)
    full = c.completions.create(**kw).choices[0].text
    assert len(full) >= 8, full  # greedy: the reply to cut
    stop = full[4:7]
    want = full[:full.find(stop)]
    r = c.completions.create(stop=[stop, "\x01never"], **kw)
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    streamed = [ch.choices[0] for ch in c.completions.create(stop=stop, stream=True, **kw)]
    assert "".join(ch.text for ch in streamed) == want and streamed[-1].finish_reason == "stop"


def test_tuned_state_changes_the_output(server):
    c = client(server)
    kw = dict(prompt="The ", max_tokens=16, temperature=0)
    assert c.completions.create(model="proj", **kw).choices[0].text != \
        c.completions.create(model="base", **kw).choices[0].text


def test_prefix_cache_hits_on_the_second_turn(server):
    c = client(server)
    msgs = [{"role": "user", "content": "first question about the cache " * 4}]
    a = c.chat.completions.create(model="base", messages=msgs, max_tokens=10, temperature=0)
    assert a.usage.prompt_tokens_details.cached_tokens == 0
    msgs += [{"role": "assistant", "content": a.choices[0].message.content},
             {"role": "user", "content": "and a follow-up"}]
    b = c.chat.completions.create(model="base", messages=msgs, max_tokens=10, temperature=0)
    cached = b.usage.prompt_tokens_details.cached_tokens
    assert cached >= len("User: " + msgs[0]["content"].strip()), (cached, b.usage)


def test_malformed_requests_get_openai_errors(server):
    st, _, e = _post(server, "/v1/completions", b"{not json")
    assert st == 400 and e["error"]["type"] == "invalid_request_error"
    for body, field in [({"prompt": "x"}, "model"), ({"model": "base"}, "prompt"),
                        ({"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens"),
                        ({"model": "base", "prompt": "x", "temperature": "hot"}, "temperature"),
                        ({"model": "base", "prompt": "x", "top_p": 1.5}, "top_p"),
                        ({"model": "base", "prompt": "x", "n": 2}, "n"),
                        ({"model": "base", "prompt": "x", "stop": 3}, "stop")]:
        st, _, e = _post(server, "/v1/completions", json.dumps(body).encode())
        assert st == 400 and e["error"]["param"] == field, (body, e)
    st, _, e = _post(server, "/v1/chat/completions", json.dumps({"model": "base", "messages": [{"role": "bot"}]}).encode())
    assert st == 400 and e["error"]["param"] == "messages[0].role"
    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model="no-such-state", prompt="x")
    st, _, e = _post(server, "/v1/nowhere", b"{}")
    assert st == 404 and "error" in e


def test_prompt_too_long_is_413(small_model):
    with running_server(small_model, max_prompt_tokens=8) as url:
        st, _, e = _post(url, "/v1/completions", json.dumps({"model": "base", "prompt": "x" * 9}).encode())
        assert st == 413 and e["error"]["code"] == "context_length_exceeded"


def test_full_queue_is_429_with_retry_after_and_a_disconnect_frees_its_slot(small_model):
    import dataclasses
    params = small_model.params
    # end-of-text (id 0) scores 0 while the best of 255 random logits is above it: greedy never stops early
    never_ends = dataclasses.replace(params, head=params.head.at[:, 0].set(0.0))
    # a ceiling above the stream's max_tokens: it runs until the client goes away
    with running_server(dataclasses.replace(small_model, params=never_ends), max_batch=1, max_waiting=1,
                        max_tokens_cap=100000) as url:
        c = client(url)
        stream = c.completions.create(model="base", prompt="a", max_tokens=100000, stream=True, temperature=0)
        chunks = iter(stream)  # kept: a dropped iterator would close the connection
        next(chunks)  # running: it holds the only row
        health = lambda: json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())
        assert health()["running"] == 1
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            waiting = ex.submit(lambda: c.completions.create(model="base", prompt="b", max_tokens=4))
            deadline = time.time() + 60
            while time.time() < deadline and health()["waiting"] < 1:  # b is queued behind the stream
                time.sleep(0.05)
            assert health()["running"] == 1 and health()["waiting"] == 1
            st, headers, e = _post(url, "/v1/completions", json.dumps({"model": "base", "prompt": "c"}).encode())
            assert st == 429 and headers.get("retry-after") == "1" and e["error"]["code"] == "rate_limit_exceeded"
            stream.close()  # the client goes away mid-stream: its row must be freed for the waiting request
            assert waiting.result(timeout=120).choices[0].finish_reason in ("length", "stop")


def test_api_key_required_on_every_route(small_model):
    with running_server(small_model, api_key="sekrit") as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").models.list()
        req = urllib.request.Request(url + "/v1/models")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=30)
        assert ei.value.code == 401
        # /health answers a probe without the key, and only that it is up
        assert json.loads(urllib.request.urlopen(url + "/health", timeout=30).read()) == {"status": "ok"}
        assert client(url, api_key="sekrit").models.list().data[0].id == "base"


def test_a_state_stored_while_serving_is_served_without_restart(server, store_dir, small_model):
    import numpy as np

    from rwkvjax.io.states import StateStore
    from rwkvjax.model.params import params_hash
    from rwkvjax.text.tokenizer import ByteTokenizer, tokenizer_id
    config, params = small_model.arch, small_model.params
    c = client(server)
    assert "late" not in [m.id for m in c.models.list().data]
    wkv = np.random.default_rng(5).normal(0, 3.0, (config.n_layer, config.n_head, config.head_size,
                                                   config.head_size)).astype(np.float32)
    StateStore(store_dir).put("late", wkv, base_hash=params_hash(params), tokenizer=tokenizer_id(ByteTokenizer()))
    assert "late" in [m.id for m in c.models.list().data]
    assert c.completions.create(model="late", prompt="x", max_tokens=4, temperature=0).choices[0].finish_reason
