"""`POST /v1/messages`, Anthropic's Messages API, driven by the official `anthropic` client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from rwkvjax.serve import anthropic as anthropic_api
from rwkvjax.serve.config import ServeConfig
from rwkvjax.serve.engine import Request, Sampling
from tests.serve.conftest import running_server

USER = [{"role": "user", "content": "Write a haiku about the sea."}]


def client(url, **kw):
    return anthropic.Anthropic(base_url=url, api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=120, **kw)


def _post(url, body: dict, headers=None):
    req = urllib.request.Request(url + "/v1/messages", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# This client takes no sampling arguments of its own (Anthropic's newest models take none); they go in the body.
GREEDY = {"temperature": 0, "top_k": 1}


def _greedy(c, **kw):
    return c.messages.create(model="base", messages=kw.pop("messages", USER), extra_body=GREEDY, **kw)


def test_a_message_has_anthropics_shape_and_usage(server):
    m = _greedy(client(server), max_tokens=3)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == "base"
    assert [b.type for b in m.content] == ["text"] and isinstance(m.content[0].text, str)
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    assert m.usage.output_tokens == 3
    prompt = "User: Write a haiku about the sea.\n\nAssistant:"  # the chat template's text, one byte a token
    assert m.usage.input_tokens == len(prompt.encode())
    # the server's speed figures, as on the OpenAI routes
    assert m.usage.model_extra["tokens_per_second"] > 0 and m.usage.model_extra["time_to_first_token_ms"] > 0
    # counted in /metrics under its route and state like any other request
    with urllib.request.urlopen(server + "/metrics", timeout=120) as r:
        text = r.read().decode()
    assert 'rwkvjax_requests_total{route="/v1/messages",status="200"}' in text
    assert 'rwkvjax_state_requests_total{state="base"}' in text


def test_streaming_gives_anthropics_events_and_the_greedy_text(server):
    c = client(server)
    whole = _greedy(c, max_tokens=12)
    with c.messages.stream(model="base", messages=USER, max_tokens=12, extra_body=GREEDY) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens
    status, raw = _post(server, {"model": "base", "messages": USER, "max_tokens": 4, "temperature": 0,
                                 "stream": True})
    events = [e for e in raw.split("\n\n") if e]
    names = [e.split("\n")[0] for e in events]
    assert status == 200 and all(e.split("\n")[1].startswith("data: ") for e in events)
    assert names[:3] == ["event: message_start", "event: content_block_start", "event: ping"]
    assert names[-3:] == ["event: content_block_stop", "event: message_delta", "event: message_stop"]
    assert set(names[3:-3]) <= {"event: content_block_delta"}
    delta = json.loads(events[-2].split("\n")[1][6:])
    assert delta["delta"]["stop_reason"] in ("max_tokens", "end_turn") and delta["usage"]["output_tokens"] <= 4


def test_a_system_prompt_is_accepted_as_a_string_or_text_blocks(server):
    c = client(server)
    a = _greedy(c, max_tokens=8, system="You are terse.")
    # a block's cache_control is honoured by the prefix cache without being read
    b = _greedy(c, max_tokens=8, system=[{"type": "text", "text": "You are "},
                                         {"type": "text", "text": "terse.", "cache_control": {"type": "ephemeral"}}])
    plain = _greedy(c, max_tokens=8)
    assert a.content[0].text == b.content[0].text
    assert a.usage.input_tokens == plain.usage.input_tokens + len("System: You are terse.\n\n")


def test_a_stop_sequence_in_the_reply_ends_it_and_is_named(server):
    c = client(server)
    text = _greedy(c, max_tokens=16).content[0].text
    at = next(i for i in range(1, len(text)) if text[i] not in " \ufffd")  # a character the reply holds
    stop = text[at]
    m = _greedy(c, max_tokens=16, stop_sequences=[stop])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop
    assert m.content[0].text == text[:text.index(stop)]


def test_the_same_conversation_gets_the_same_reply_from_openai_chat(server):
    convo = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi there."},
             {"role": "user", "content": "How are you?"}]
    a = _greedy(client(server), max_tokens=10, system="Be kind.", messages=convo)
    o = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)
    r = o.chat.completions.create(model="base", messages=[{"role": "system", "content": "Be kind."}, *convo],
                                  max_tokens=10, temperature=0)
    assert a.content[0].text == r.choices[0].message.content
    assert a.usage.input_tokens == r.usage.prompt_tokens and a.usage.output_tokens == r.usage.completion_tokens


def test_unsupported_content_and_fields_are_400s_naming_them(server):
    c = client(server)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="base", max_tokens=4,
                          messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[1]" in e.value.message and "'image'" in e.value.message
    with pytest.raises(anthropic.BadRequestError, match="'tools'"):
        c.messages.create(model="base", max_tokens=4, messages=USER,
                          tools=[{"name": "f", "input_schema": {"type": "object"}}])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        c.messages.create(model="base", max_tokens=10**9, messages=USER)  # over the server's --max-tokens-cap
    with pytest.raises(anthropic.BadRequestError, match="prefill"):
        c.messages.create(model="base", max_tokens=4, messages=[*USER, {"role": "assistant", "content": "Waves"}])
    status, raw = _post(server, {"model": "base", "messages": USER})
    assert status == 400 and json.loads(raw) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "'max_tokens' is required"}}


def test_unknown_model_is_not_found(server):
    with pytest.raises(anthropic.NotFoundError) as e:
        client(server).messages.create(model="no-such-state", max_tokens=4, messages=USER)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"


def test_a_named_state_and_metadata_are_accepted_without_anthropic_version(server):
    status, raw = _post(server, {"model": "proj", "messages": USER, "max_tokens": 2, "temperature": 0,
                                 "metadata": {"user_id": "someone"}})
    body = json.loads(raw)
    assert status == 200 and body["model"] == "proj" and body["usage"]["output_tokens"] <= 2


def test_the_api_key_is_checked(small_model):
    with running_server(small_model, api_key="sesame", memory=False) as url:
        with pytest.raises(anthropic.AuthenticationError) as e:
            client(url, api_key="wrong").messages.create(model="base", max_tokens=2, messages=USER)
        assert e.value.body["error"]["type"] == "authentication_error"
        m = client(url, api_key="sesame").messages.create(model="base", max_tokens=2, messages=USER)
        assert m.usage.output_tokens <= 2


def _call_in_process(app, body: dict) -> tuple[int, list[bytes]]:
    """One POST /v1/messages through the ASGI app itself: its status and body pieces."""
    raw, sent = json.dumps(body).encode(), []

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 120))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]


def test_a_draining_server_answers_with_anthropics_overloaded_error(small_model):
    from rwkvjax.serve.app import build_app
    from rwkvjax.serve.server import Server
    server = Server(ServeConfig(model="small-test-model", warmup=False, memory=False), small_model)
    server.engine.drain(60)  # a shutdown began: no new request is taken (the engine's thread never starts)
    status, pieces = _call_in_process(build_app(server), {"model": "base", "messages": USER, "max_tokens": 2})
    assert status == 503 and json.loads(b"".join(pieces))["error"]["type"] == "overloaded_error"


def test_a_stream_the_shutdown_ends_unstarted_ends_with_an_error_event():
    """The engine's "unavailable" (a shutdown's deadline reached a request before its first token) mid-stream."""
    job = Request([1], None, "base", Sampling(), lambda kind, payload: None)

    async def run():
        events: asyncio.Queue = asyncio.Queue()
        events.put_nowait(("unavailable", "the server is shutting down"))
        return [e async for e in anthropic_api._stream(job, events, anthropic_api._Reply("msg_1", "base", 1, ()))]

    frames = asyncio.run(run())
    names = [f.split("\n")[0] for f in frames]
    assert names == ["event: message_start", "event: content_block_start", "event: ping", "event: error"]
    assert json.loads(frames[-1].split("\n")[1][6:]) == {"type": "error", "error": {
        "type": "overloaded_error", "message": "the server is shutting down"}}
    assert job.cancelled.is_set()  # its row, had it one, is freed
