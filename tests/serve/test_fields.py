"""Fields as today's clients send them: `max_completion_tokens`, the `developer` role, `models.retrieve`, and a
400 naming every field the server does not support (never silently ignored); with the official `openai` client
against a real server, and the routes' tables checked directly."""

from __future__ import annotations

import types

import openai
import pytest
from starlette.testclient import TestClient

from rwkvjax.serve.app import build_app
from rwkvjax.serve.chat import Message
from rwkvjax.serve.requests import CHAT_FIELDS, COMPLETION_FIELDS, BadRequest, ChatCompletion, Completion


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


USER = [{"role": "user", "content": "hello"}]

# (route, field, a value asking for something the server cannot do): each must be a 400 naming the field
UNSUPPORTED = [
    ("chat", "logprobs", True), ("chat", "top_logprobs", 3), ("chat", "logit_bias", {"65": 5}),
    ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("chat", "tool_choice", "required"), ("chat", "functions", [{"name": "f", "parameters": {}}]),
    ("chat", "function_call", "auto"), ("chat", "parallel_tool_calls", True),
    ("chat", "response_format", {"type": "json_object"}), ("chat", "audio", {"voice": "alloy", "format": "wav"}),
    ("chat", "modalities", ["text", "audio"]), ("chat", "prediction", {"type": "content", "content": "x"}),
    ("chat", "web_search_options", {}), ("chat", "reasoning_effort", "high"), ("chat", "store", True),
    ("chat", "service_tier", "flex"), ("chat", "min_p", 0.1), ("chat", "repetition_penalty", 1.1),
    ("completion", "logprobs", 2), ("completion", "echo", True), ("completion", "suffix", "end"),
    ("completion", "best_of", 3), ("completion", "logit_bias", {"65": 5}), ("completion", "session", "s"),
    ("completion", "tools", []),
]


def _create(c, route: str, **kw):
    if route == "chat":
        return c.chat.completions.create(model="base", messages=USER, **kw)
    return c.completions.create(model="base", prompt="x = ", **kw)


@pytest.mark.parametrize("route, field, value", UNSUPPORTED, ids=[f"{r}-{f}" for r, f, _ in UNSUPPORTED])
def test_an_unsupported_field_is_a_400_naming_it(server, route, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        _create(client(server), route, max_tokens=2, extra_body={field: value})
    assert e.value.status_code == 400 and e.value.param == field and f"'{field}'" in e.value.message, e.value.body


def test_inert_values_and_harmless_fields_are_accepted(server):
    """What some clients send unasked, and which changes no reply."""
    c = client(server)
    r = c.chat.completions.create(model="base", messages=USER, max_tokens=2, temperature=0, logprobs=False,
                                  tools=[], tool_choice="none", response_format={"type": "text"}, user="u-1",
                                  metadata={"k": "v"}, store=False, service_tier="auto", modalities=["text"])
    assert r.choices[0].message.role == "assistant"
    r = c.completions.create(model="base", prompt="x = ", max_tokens=2, echo=False, best_of=1, user="u-1",
                             logprobs=None, suffix=None)
    assert r.usage.completion_tokens <= 2


def test_max_completion_tokens_is_honoured(server):
    c = client(server)
    # greedy from this prompt the small model does not stop within 5 tokens (test_server's curl test relies on it)
    r = c.completions.create(model="base", prompt="x = ", temperature=0, extra_body={"max_completion_tokens": 5})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    m = c.chat.completions.create(model="base", messages=USER, max_completion_tokens=3, temperature=0)
    assert m.usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="base", messages=USER, max_completion_tokens=3, max_tokens=4)
    assert e.value.param == "max_completion_tokens" and "disagree" in e.value.message
    same = c.chat.completions.create(model="base", messages=USER, max_completion_tokens=3, max_tokens=3,
                                     temperature=0)
    assert same.choices[0].message.content == m.choices[0].message.content


def test_max_completion_tokens_parses_as_max_tokens():
    parse = lambda body: Completion.parse(body, default_max_tokens=33, max_tokens_cap=100)
    assert parse({"model": "base", "prompt": "x", "max_completion_tokens": 5}).sampling.max_tokens == 5
    assert parse({"model": "base", "prompt": "x", "max_completion_tokens": 5, "max_tokens": 5}).sampling.max_tokens == 5
    for body, words in [({"max_completion_tokens": 101}, "at most 100"), ({"max_completion_tokens": 0}, "[1, inf]"),
                        ({"max_completion_tokens": 4, "max_tokens": 5}, "disagree")]:
        with pytest.raises(BadRequest) as e:
            parse({"model": "base", "prompt": "x", **body})
        assert e.value.param == "max_completion_tokens" and words in e.value.message, e.value.message


def test_the_developer_role_is_a_system_message(server):
    r = ChatCompletion.parse({"model": "base", "messages": [{"role": "developer", "content": "be brief"}, *USER]},
                             default_max_tokens=8)
    assert r.messages == (Message("system", "be brief"), Message("user", "hello"))
    c = client(server)
    kw = dict(model="base", max_tokens=4, temperature=0)
    dev = c.chat.completions.create(messages=[{"role": "developer", "content": "be brief"}, *USER], **kw)
    sys = c.chat.completions.create(messages=[{"role": "system", "content": "be brief"}, *USER], **kw)
    assert dev.usage.prompt_tokens == sys.usage.prompt_tokens
    assert dev.choices[0].message.content == sys.choices[0].message.content


def test_models_retrieve(server):
    c = client(server)
    listed = {m.id: m for m in c.models.list().data}
    for name in ("base", "proj"):
        got = c.models.retrieve(name)
        assert got.id == name and got.object == "model" and got.model_dump() == listed[name].model_dump()
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("no-such-state")
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and "no-such-state" in e.value.message


class _Engine:
    def stats(self) -> dict:
        return {"running": 0}


def test_a_model_id_may_hold_slashes():
    """State names may be `project/experiment`: the route takes the rest of the path as the id."""
    server = types.SimpleNamespace(api_key="k", model_name="m", engine=_Engine(), tuner=None,
                                   model_list=lambda: [("base", None, {}), ("team/exp/1", 5, {"parent": None})])
    with TestClient(build_app(server)) as c:
        assert c.get("/v1/models/team/exp/1").status_code == 401  # behind the key, like the list
        r = c.get("/v1/models/team/exp/1", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and r.json() == {"id": "team/exp/1", "object": "model", "created": 5,
                                                     "owned_by": "rwkvjax", "parent": None}
        r = c.get("/v1/models/team/exp", headers={"Authorization": "Bearer k"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_every_field_of_both_tables_is_read_or_refused_with_a_reason():
    for table in (COMPLETION_FIELDS, CHAT_FIELDS):
        for name, f in table.items():
            assert f.refused is None or f.refused == "" and f.inert(object()) or f"'{name}'" in f.refused, name
    assert CHAT_FIELDS["messages"].refused is None and "messages" not in COMPLETION_FIELDS
    assert COMPLETION_FIELDS["prompt"].refused is None and "prompt" not in CHAT_FIELDS
