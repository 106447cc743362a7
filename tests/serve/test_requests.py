"""Request bodies parsed into typed values at the HTTP edge: every field, every refusal naming its field; and the
app's routes reading the server from the app's state (no model needed: nothing here reaches the engine)."""

from __future__ import annotations

import types

import pytest
from starlette.testclient import TestClient

from rwkvjax.serve.app import build_app
from rwkvjax.serve.chat import TURN_END, Message
from rwkvjax.serve.requests import BadRequest, ChatCompletion, Completion, read_json

parse = lambda body: Completion.parse(body, default_max_tokens=33)
parse_chat = lambda body: ChatCompletion.parse(body, default_max_tokens=33)


def test_completion_defaults_and_every_field():
    r = parse({"model": "base", "prompt": "x"})
    assert (r.model, r.prompt, r.stream, r.include_usage, r.prompt_text()) == ("base", "x", False, False, "x")
    s = r.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.presence, s.frequency, s.seed, s.stop) == \
        (33, 1.0, 1.0, 0, 0.0, 0.0, None, ())
    r = parse({"model": "proj", "prompt": ["one"], "max_tokens": 5.0, "temperature": 0, "top_p": 0.5, "top_k": 3,
               "presence_penalty": -1, "frequency_penalty": 2, "seed": 9, "stop": "END", "n": 1, "stream": True,
               "stream_options": {"include_usage": True}, "user": "someone"})
    s = r.sampling
    assert (r.model, r.prompt, r.stream, r.include_usage) == ("proj", "one", True, True)
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.presence, s.frequency, s.seed, s.stop) == \
        (5, 0.0, 0.5, 3, -1.0, 2.0, 9, ("END",))
    assert isinstance(s.max_tokens, int) and isinstance(s.temperature, float)
    assert parse({"model": "base", "prompt": "x", "stop": ["a", "b"], "temperature": None}).sampling.stop == ("a", "b")


@pytest.mark.parametrize("body, param, words", [
    ([], None, "must be a JSON object"),
    ({"prompt": "x"}, "model", "'model' is required"),
    ({"model": "", "prompt": "x"}, "model", "'model' is required"),
    ({"model": "base"}, "prompt", "'prompt' must be a non-empty string"),
    ({"model": "base", "prompt": ["a", "b"]}, "prompt", "one prompt per request"),
    ({"model": "base", "prompt": "x", "n": 2}, "n", "'n' must be 1"),
    ({"model": "base", "prompt": "x", "n": 1.5}, "n", "'n' must be an integer"),
    ({"model": "base", "prompt": "x", "stop": 3}, "stop", "'stop' must be a string or a list of at most 4"),
    ({"model": "base", "prompt": "x", "stop": ["a"] * 5}, "stop", "at most 4"),
    ({"model": "base", "prompt": "x", "stop": [""]}, "stop", "must not be empty"),
    ({"model": "base", "prompt": "x", "seed": 1.5}, "seed", "'seed' must be an integer"),
    ({"model": "base", "prompt": "x", "seed": True}, "seed", "'seed' must be an integer"),
    ({"model": "base", "prompt": "x", "stream": "yes"}, "stream", "'stream' must be true or false"),
    ({"model": "base", "prompt": "x", "stream_options": 3}, "stream_options", "must be an object"),
    ({"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens", "'max_tokens' must be in [1, inf]"),
    ({"model": "base", "prompt": "x", "max_tokens": "5"}, "max_tokens", "must be an integer, got '5'"),
    ({"model": "base", "prompt": "x", "temperature": "hot"}, "temperature", "must be a number"),
    ({"model": "base", "prompt": "x", "temperature": True}, "temperature", "must be a number"),
    ({"model": "base", "prompt": "x", "temperature": 2.5}, "temperature", "must be in [0, 2]"),
    ({"model": "base", "prompt": "x", "top_p": 0}, "top_p", "must be in (0, 1]"),
    ({"model": "base", "prompt": "x", "top_p": 1.5}, "top_p", "must be in (0, 1]"),
    ({"model": "base", "prompt": "x", "top_k": -1}, "top_k", "must be in [0, inf]"),
    ({"model": "base", "prompt": "x", "presence_penalty": 3}, "presence_penalty", "must be in [-2, 2]"),
    ({"model": "base", "prompt": "x", "frequency_penalty": float("inf")}, "frequency_penalty", "must be finite"),
])
def test_completion_refusals_name_the_field(body, param, words):
    with pytest.raises(BadRequest) as e:
        parse(body)
    assert e.value.status == 400 and e.value.param == param and words in e.value.message, e.value.message


def test_the_first_bad_field_is_the_one_named():
    with pytest.raises(BadRequest) as e:  # both bad: `n` is checked before `temperature`, as before
        parse({"model": "base", "prompt": "x", "temperature": "hot", "n": 3})
    assert e.value.param == "n"


def test_chat_messages_template_stop_and_session():
    r = parse_chat({"model": "base", "stop": ["\n\n", "END"], "session": "s-1@x",
                    "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                              {"type": "text", "text": "there"}]}]})
    assert r.messages == (Message("system", "be brief"), Message("user", "hi there")) and r.session == "s-1@x"
    assert r.sampling.stop == ("\n\n", "END")  # the turn's end is a stop once, whoever asked for it
    assert r.prompt_text() == "System: be brief\n\nUser: hi there\n\nAssistant:"
    assert parse_chat({"model": "base", "messages": [{"role": "user", "content": "x"}]}).sampling.stop == (TURN_END,)
    assert r.chat and r.prompt_field == "messages" and not Completion.chat and Completion.prompt_field == "prompt"


@pytest.mark.parametrize("body, param", [
    ({"model": "base"}, "messages"),
    ({"model": "base", "messages": []}, "messages"),
    ({"model": "base", "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}, "hi"]}, "messages[1].role"),
    ({"model": "base", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "session": "a b"}, "session"),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "session": "x" * 101}, "session"),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
])
def test_chat_refusals_name_the_field(body, param):
    with pytest.raises(BadRequest) as e:
        parse_chat(body)
    assert e.value.status == 400 and e.value.param == param


def test_a_body_that_is_not_json():
    with pytest.raises(BadRequest) as e:
        read_json(b"{not json")
    assert e.value.status == 400 and e.value.param is None and "not valid JSON" in e.value.message
    with pytest.raises(BadRequest):
        read_json(b"\xff\xfe")
    assert read_json(b'{"a": 1}') == {"a": 1}


class _Engine:
    def stats(self) -> dict:
        return {"running": 0}


def _server(api_key=None):
    """What the routes read of a `Server` before a request reaches the engine."""
    return types.SimpleNamespace(api_key=api_key, model_name="m", engine=_Engine(), default_max_tokens=8,
                                 model_list=lambda: [("base", None, {"base_model": "m"})], tuner=None,
                                 max_tokens_cap=4096, max_body_bytes=1 << 20, read_timeout_s=15.0)


def test_routes_read_the_server_from_the_app_state():
    with TestClient(build_app(_server())) as c:
        assert c.get("/health").json() == {"status": "ok", "model": "m", "running": 0}
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["base"]
        r = c.post("/v1/completions", json={"model": "base", "prompt": "x", "top_p": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"
        r = c.post("/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = c.get("/v1/completions")
        assert r.status_code == 405 and "error" in r.json()


def test_every_route_needs_the_key_and_an_unknown_path_stays_404():
    with TestClient(build_app(_server("k"))) as c:
        for method, path in [("get", "/v1/models"), ("post", "/v1/completions"), ("post", "/v1/chat/completions")]:
            r = getattr(c, method)(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        # a load balancer's probe carries no key: a bare status; the details only with the key
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/health", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
        assert c.get("/health", headers={"Authorization": "Bearer k"}).json() == \
            {"status": "ok", "model": "m", "running": 0}
        assert c.get("/nowhere").status_code == 404


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer k"}, {"Authorization": "bearer k"},
                                     {"Authorization": "BEARER  k "}, {"x-api-key": "k"}])
def test_the_key_is_taken_with_any_case_of_bearer_and_as_x_api_key(headers):
    with TestClient(build_app(_server("k"))) as c:
        assert c.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer kk"}, {"Authorization": "Basic k"},
                                     {"Authorization": "k"}, {"x-api-key": "K"}, {"Authorization": "Bearer"}])
def test_a_wrong_key_or_scheme_is_refused(headers):
    with TestClient(build_app(_server("k"))) as c:
        r = c.get("/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_the_key_is_compared_in_constant_time(monkeypatch):
    """Through `hmac.compare_digest`, not `==`: a refusal takes the same time however much of a guess was right."""
    import hmac

    from rwkvjax.serve import guard as guard_module  # where `serve.app.key_ok` lives (the dashboard's check too)
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(guard_module.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    with TestClient(build_app(_server("k"))) as c:
        assert c.get("/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
    assert (b"x", b"k") in seen


def _raw(raw: bytes, chat=False):
    """A body as the routes read it: bytes, then the typed request."""
    return (parse_chat if chat else parse)(read_json(raw))


_P = b'"model": "base", "prompt": "x"'
_M = b'"model": "base", "messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize("raw, param, words", [
    (b'{%s, "top_k": 2147483648}' % _P, "top_k", "at most 2147483647"),
    (b'{%s, "max_tokens": 2147483648}' % _P, "max_tokens", "at most 2147483647"),
    (b'{%s, "seed": 9223372036854775808}' % _P, "seed", "[-2^63, 2^63 - 1]"),
    (b'{%s, "seed": -9223372036854775809}' % _P, "seed", "[-2^63, 2^63 - 1]"),
    (b'{%s, "seed": %s}' % (_P, b"7" * 5000), "seed", "a 5000-digit number"),
    (b'{%s, "seed": -%s}' % (_P, b"7" * 5000), "seed", "a 5000-digit number"),
    (b'{%s, "top_k": %s}' % (_P, b"9" * 5000), "top_k", "at most 2147483647, got a 5000-digit number"),
    (b'{%s, "n": %s}' % (_P, b"9" * 5000), "n", "at most 2147483647"),
    (b'{%s, "temperature": %s}' % (_P, b"9" * 5000), "temperature", "must be in [0, 2], got a 5000-digit"),
    (b'{%s, "temperature": 1e400}' % _P, "temperature", "must be finite"),
    (b'{%s, "top_p": -1e400}' % _P, "top_p", "must be finite"),
    (b'{%s, "presence_penalty": 1e309}' % _P, "presence_penalty", "must be finite"),
    (b'{%s, "seed": 1e400}' % _P, "seed", "must be an integer"),
    (b'{%s, "stop": "%s"}' % (_P, b"s" * 1001), "stop", "at most 1000 characters"),
    (b'{%s, "stream_options": {"include_usage": [1]}}' % _P, "stream_options.include_usage", "true or false"),
    (b'{"model": "base", "prompt": "a\\ud800b"}', "prompt", "lone surrogate"),
    (b'{"model": "\\udfff", "prompt": "x"}', "model", "lone surrogate"),
    (b'{%s, "stop": ["ok", "\\ud83d"]}' % _P, "stop[1]", "lone surrogate"),
    (b'{%s, "user": {"\\ud800": 1}}' % _P, "user.\ud800", "lone surrogate"),
    (b'{%s, "user": %s}' % (_P, b"[" * 100 + b"]" * 100), "user" + "[0]" * 64, "nested too deeply"),
    (b'{%s, "user": %s}' % (_P, b"[" * 100000 + b"]" * 100000), None, "nested too deeply"),
])
def test_out_of_range_and_malformed_values_are_400_naming_the_field(raw, param, words):
    with pytest.raises(BadRequest) as e:
        _raw(raw)
    assert e.value.status == 400 and e.value.param == param and words in e.value.message, e.value.message


@pytest.mark.parametrize("raw, param", [
    (b'{"model": "base", "messages": [{"role": ["user"], "content": "x"}]}', "messages[0].role"),
    (b'{"model": "base", "messages": [{"role": {"a": 1}, "content": "x"}]}', "messages[0].role"),
    (b'{"model": "base", "messages": [{"role": 3, "content": "x"}]}', "messages[0].role"),
    (b'{"model": "base", "messages": [{"role": "user", "content": "\\udc00"}]}', "messages[0].content"),
    (b'{%s, "seed": %s}' % (_M, b"1" * 5000), "seed"),
])
def test_chat_malformed_values_are_400_naming_the_field(raw, param):
    with pytest.raises(BadRequest) as e:
        _raw(raw, chat=True)
    assert e.value.status == 400 and e.value.param == param


def test_the_edges_of_every_range_are_taken():
    s = _raw(b'{%s, "seed": 9223372036854775807, "top_k": 2147483647, "max_tokens": 2147483647}' % _P).sampling
    assert (s.seed, s.top_k, s.max_tokens) == (2**63 - 1, 2**31 - 1, 2**31 - 1)
    assert _raw(b'{%s, "seed": -9223372036854775808}' % _P).sampling.seed == -2**63
    assert _raw(b'{%s, "stop": "%s"}' % (_P, b"s" * 1000)).sampling.stop == ("s" * 1000,)
    assert _raw(b'{"model": "base", "prompt": "\\ud83d\\ude00"}').prompt == "\U0001F600"  # a pair is one character
    assert _raw(b'{%s, "user": %s}' % (_P, b"[" * 60 + b"]" * 60)).prompt == "x"


def test_malformed_bodies_are_400_through_the_routes():
    with TestClient(build_app(_server())) as c:
        for path, raw, param in [
                ("/v1/completions", b'{%s, "seed": %s}' % (_P, b"5" * 5000), "seed"),
                ("/v1/completions", b'{%s, "top_k": 4294967296}' % _P, "top_k"),
                ("/v1/completions", b'{"model": "base", "prompt": "\\ud800"}', "prompt"),
                ("/v1/completions", b'{%s, "x": %s}' % (_P, b"[" * 100000 + b"]" * 100000), None),
                ("/v1/chat/completions", b'{"model": "base", "messages": [{"role": [], "content": "x"}]}',
                 "messages[0].role")]:
            r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, r.text[:200])
