"""The bodies of `POST /v1/completions` and `POST /v1/chat/completions`, parsed once at the HTTP edge into typed
values (`Completion`, `ChatCompletion`); past `parse` nothing reads the JSON again.

Frozen dataclasses with a `parse` of their own, not pydantic models: the checks are OpenAI's and this server's
(a JSON `true` is not a number, `2.0` is an integer, `stop` is one string or up to four, only `n = 1`, an error
names the field as `messages[3].content`), each with a message clients read. Pydantic would need a validator and
an error translation per field to say the same, and would coerce where this server refuses (`"1"` for 1) unless
every field were strict; it would add a layer without removing a check. Every top-level field a route knows is in
its table (`COMPLETION_FIELDS`, `CHAT_FIELDS`): read, or refused by name unless its value asks for nothing; a field
in neither is refused too, so nothing a client sends is silently ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from typing import Callable, ClassVar

from rwkvjax.serve.chat import ROLES, TURN_END, Message, chat_prompt
from rwkvjax.serve.engine import Sampling


class BadRequest(Exception):
    """An OpenAI-style 400: `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code
        self.headers = headers  # of the error response (Retry-After, Connection)


INT64 = (-(1 << 63), (1 << 63) - 1)  # the seed's range: what a PRNG key is made from
INT32_MAX = (1 << 31) - 1            # top_k and max_tokens travel to the device as int32
MAX_STOP_CHARS = 1000                # one stop string: the detokenizer holds back this much text at most
MAX_DEPTH = 64                       # nesting of the body: no field of either route is deeper than 4


class _LongNumber:
    """An integer literal of more digits than any field takes: kept as its length, not converted (Python refuses
    to convert over 4,300 digits, and the conversion is quadratic below that); every field refuses it by name."""

    def __init__(self, digits: str):
        self.digits = len(digits.lstrip("-"))

    def __repr__(self) -> str:
        return f"a {self.digits}-digit number"


def _int_literal(digits: str):
    return int(digits) if len(digits) <= 40 else _LongNumber(digits)


_CLOSE = {"Connection": "close"}  # a body left unread must not be taken for the connection's next request


async def read_body(req, *, max_bytes: int, timeout_s: float) -> bytes:
    """The body of Starlette request `req`, read piece by piece: a declared Content-Length over `max_bytes` is
    refused before anything is read, and a body that grows past it as soon as it does (413), so what a client
    sends costs this server `max_bytes` at most; a piece that takes over `timeout_s` to arrive is a 408."""
    declared = req.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"the body is {int(declared)} bytes; this server takes at most {max_bytes}", None, 413,
                         "request_too_large", _CLOSE)
    parts, size = [], 0
    pieces = req.stream().__aiter__()
    while True:
        try:
            piece = await asyncio.wait_for(pieces.__anext__(), timeout_s)
        except StopAsyncIteration:
            return b"".join(parts)
        except asyncio.TimeoutError:
            raise BadRequest(f"the body stalled: nothing arrived for {timeout_s:g} s", None, 408, "request_timeout",
                             _CLOSE) from None
        size += len(piece)
        if size > max_bytes:
            raise BadRequest(f"the body is over {max_bytes} bytes, the most this server takes", None, 413,
                             "request_too_large", _CLOSE)
        parts.append(piece)


def read_json(raw: bytes):
    try:
        body = json.loads(raw, parse_int=_int_literal)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise BadRequest(f"the body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    _check_tree(body)
    return body


def _check_tree(body) -> None:
    """Refuses a body nested deeper than MAX_DEPTH or holding a string that is not Unicode text (a lone surrogate
    escape, `"\\ud800"`, is valid JSON but cannot be encoded), naming the field; iterative, so no depth can
    exhaust the stack."""
    todo = [(body, "", 0)]
    while todo:
        v, path, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"the body is nested too deeply (at most {MAX_DEPTH} levels)", path or None)
        if isinstance(v, str):
            _check_text(v, path)
        elif isinstance(v, dict):
            for k, x in v.items():
                sub = f"{path}.{k}" if path else k
                _check_text(k, sub)
                todo.append((x, sub, depth + 1))
        elif isinstance(v, list):
            todo.extend((x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v))


def _check_text(s: str, path: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"'{path}' is not valid Unicode text (a lone surrogate)", path or None) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Generation:
    """The fields both routes take."""

    model: str                   # `base` or the name of a state
    sampling: Sampling           # max_tokens, temperature, top_p, top_k, penalties, seed, stop
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage

    chat: ClassVar[bool]
    prompt_field: ClassVar[str]  # the field a prompt over the server's length limit is blamed on


@dataclasses.dataclass(frozen=True, kw_only=True)
class Completion(_Generation):
    prompt: str

    chat: ClassVar[bool] = False
    prompt_field: ClassVar[str] = "prompt"

    @classmethod
    def parse(cls, body, *, default_max_tokens: int, max_tokens_cap: int = INT32_MAX) -> Completion:
        common = _common(body, default_max_tokens, max_tokens_cap, COMPLETION_FIELDS)
        return cls(prompt=_prompt(body), **common)

    def prompt_text(self) -> str:
        return self.prompt


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatCompletion(_Generation):
    messages: tuple[Message, ...]
    session: str | None = None   # an rwkvjax extension: names the conversation for test-time training

    chat: ClassVar[bool] = True
    prompt_field: ClassVar[str] = "messages"

    @classmethod
    def parse(cls, body, *, default_max_tokens: int, max_tokens_cap: int = INT32_MAX) -> ChatCompletion:
        common = _common(body, default_max_tokens, max_tokens_cap, CHAT_FIELDS)
        messages = _messages(body)
        s = common.pop("sampling")
        # a reply ends with its turn, whatever else stops it
        sampling = dataclasses.replace(s, stop=tuple(dict.fromkeys(s.stop + (TURN_END,))))
        return cls(messages=messages, session=_session(body), sampling=sampling, **common)

    def prompt_text(self) -> str:
        return chat_prompt(self.messages)


@dataclasses.dataclass(frozen=True)
class Field:
    """One top-level field of a route. `refused`: None for a field `parse` reads; else why the server cannot do
    what it asks, the 400's message. `inert(value)`: True for the values of a refused field that ask for nothing
    (`"logprobs": false`, `"tools": []`), which some clients send unasked and which change no reply."""

    refused: str | None = None
    inert: Callable[[object], bool] = lambda v: v is None


SUPPORTED = Field()
_ANY = lambda v: True  # noqa: E731
# The official `openai` client sends only the fields its caller gives (checked with openai 3.63: `create` sends
# `model`, `messages`/`prompt` and `stream` when streaming). What other clients fill in for every request to tag or
# route it on OpenAI's side, and which changes no reply, is accepted: `user` and
# `safety_identifier` name the end user for abuse monitoring, `metadata` tags a stored completion, `prompt_cache_key`
# hints OpenAI's prompt cache (this server's prefix cache needs no hint). Refusing them would break clients
# (LangChain, agent frameworks) that fill them in for every request, for nothing gained.
_HARMLESS = {"user": Field("", _ANY), "safety_identifier": Field("", _ANY), "metadata": Field("", _ANY),
             "prompt_cache_key": Field("", _ANY),
             # `store: true` asks OpenAI to keep the completion for later retrieval: nothing here keeps it
             "store": Field("this server stores no completions ('store' may only be false)",
                            lambda v: v is None or v is False),
             "service_tier": Field("this server has one service tier ('service_tier' may be 'auto' or 'default')",
                                   lambda v: v in (None, "auto", "default"))}
_COMMON = {name: SUPPORTED for name in (
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "presence_penalty",
    "frequency_penalty", "seed", "stop", "stream", "stream_options", "n")} | _HARMLESS | {
    "logit_bias": Field("'logit_bias' is not supported (no per-token bias in the sampler)",
                        lambda v: v is None or v == {}),
    "top_logprobs": Field("'top_logprobs' is not supported: this server returns no log-probabilities",
                          lambda v: v is None or v == 0)}
COMPLETION_FIELDS: dict[str, Field] = _COMMON | {
    "prompt": SUPPORTED,
    "logprobs": Field("'logprobs' is not supported: this server returns no log-probabilities",
                      lambda v: v is None or v is False),
    "echo": Field("'echo' is not supported (the reply never repeats the prompt)", lambda v: v is None or v is False),
    "suffix": Field("'suffix' is not supported (no fill-in-the-middle)", lambda v: v is None or v == ""),
    "best_of": Field("'best_of' must be 1 (one candidate per request)", lambda v: v is None or v == 1)}
_NO_TOOLS = "this server does not call tools or functions"
CHAT_FIELDS: dict[str, Field] = _COMMON | {
    "messages": SUPPORTED, "session": SUPPORTED,
    "logprobs": Field("'logprobs' is not supported: this server returns no log-probabilities",
                      lambda v: v is None or v is False),
    "tools": Field(f"'tools' is not supported: {_NO_TOOLS}", lambda v: v is None or v == []),
    "functions": Field(f"'functions' is not supported: {_NO_TOOLS}", lambda v: v is None or v == []),
    "tool_choice": Field(f"'tool_choice' may only be 'none': {_NO_TOOLS}", lambda v: v in (None, "none")),
    "function_call": Field(f"'function_call' may only be 'none': {_NO_TOOLS}", lambda v: v in (None, "none")),
    "parallel_tool_calls": Field(f"'parallel_tool_calls' is not supported: {_NO_TOOLS}"),
    "response_format": Field("'response_format' may only be {'type': 'text'} (no structured output)",
                             lambda v: v is None or v == {"type": "text"}),
    "audio": Field("'audio' is not supported: the model reads and writes text only"),
    "modalities": Field("'modalities' may only be ['text']: the model reads and writes text only",
                        lambda v: v is None or v == ["text"]),
    "prediction": Field("'prediction' is not supported (no predicted outputs)"),
    "web_search_options": Field("'web_search_options' is not supported: this server does not search the web"),
    "reasoning_effort": Field("'reasoning_effort' is not supported (the model has no reasoning setting)"),
    "verbosity": Field("'verbosity' is not supported (the model has no verbosity setting)")}


def _check_fields(body: dict, table: dict[str, Field]) -> None:
    """A 400 naming the first field of `body` that `table` refuses, or does not know."""
    for name, value in body.items():
        f = table.get(name)
        if f is None:
            raise BadRequest(f"'{name}' is not a field this server knows (supported: "
                             f"{', '.join(k for k, v in table.items() if v.refused is None)})", name)
        if f.refused and not f.inert(value):
            raise BadRequest(f.refused, name)


def _num(body: dict, name: str, default, lo=None, hi=None, *, integer=False, lo_open=False, limit=None):
    """`lo`/`hi`: the field's meaningful range; `limit`: the largest integer the engine can carry (an `int` field
    whose range is open above), refused with its own message."""
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, _LongNumber):  # beyond every field's range; never converted
        bound = f"at most {limit}" if limit is not None else f"in [{lo}, {hi if hi is not None else 'inf'}]"
        raise BadRequest(f"'{name}' must be {bound}, got {v!r}", name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}, got {v!r}", name)
    if not math.isfinite(v):
        raise BadRequest(f"'{name}' must be finite, got {v!r}", name)
    if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise BadRequest(f"'{name}' must be in {rng}, got {v!r}", name)
    if limit is not None and v > limit:
        raise BadRequest(f"'{name}' must be at most {limit}, got {v!r}", name)
    return int(v) if integer else float(v)


def _common(body, default_max_tokens: int, max_tokens_cap: int, fields: dict[str, Field]) -> dict:
    """The shared fields, checked in this order (the first bad one is the error); the keyword arguments of
    `_Generation`. `max_tokens_cap`: the server's ceiling on `max_tokens` (`--max-tokens-cap`); `fields`: the
    route's table, every other field of the body refused by name."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: 'base' or the name of a state (GET /v1/models lists them)", "model")
    _check_fields(body, fields)
    n = _num(body, "n", 1, integer=True, limit=INT32_MAX)
    if n != 1:
        raise BadRequest("'n' must be 1 (one choice per request)", "n")
    stop = stop_strings(body, "stop", 4)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, _LongNumber))):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}", "seed")
    if isinstance(seed, _LongNumber) or seed is not None and not INT64[0] <= seed <= INT64[1]:
        raise BadRequest(f"'seed' must be in [-2^63, 2^63 - 1] (a 64-bit integer), got {seed!r}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, got {stream!r}", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = opts.get("include_usage", False)
    if not isinstance(include_usage, bool) and include_usage is not None:
        raise BadRequest(f"'stream_options.include_usage' must be true or false, got {include_usage!r}",
                         "stream_options.include_usage")
    sampling = Sampling(
        max_tokens=_max_tokens(body, default_max_tokens, max_tokens_cap),
        temperature=_num(body, "temperature", 1.0, 0, 2),
        top_p=_num(body, "top_p", 1.0, 0, 1, lo_open=True),
        top_k=_num(body, "top_k", 0, 0, integer=True, limit=INT32_MAX),  # >= the vocabulary: no cutoff
        presence=_num(body, "presence_penalty", 0.0, -2, 2),
        frequency=_num(body, "frequency_penalty", 0.0, -2, 2),
        seed=seed, stop=tuple(stop))
    return {"model": model, "stream": stream, "include_usage": bool(include_usage),
            "sampling": sampling}


def stop_strings(body: dict, name: str, most: int, *, one_string: bool = True) -> list[str]:
    """Field `name` of `body`: a list of at most `most` stop strings (`one_string`: or one string alone), each
    non-empty and at most MAX_STOP_CHARS long; [] when absent."""
    stop = body.get(name)
    what = "a string or a list" if one_string else "a list"
    if stop is None:
        return []
    if isinstance(stop, str) and one_string:
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)) or len(stop) > most:
        raise BadRequest(f"'{name}' must be {what} of at most {most} strings", name)
    if any(s == "" for s in stop):
        raise BadRequest(f"'{name}' strings must not be empty", name)
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise BadRequest(f"'{name}' strings must be at most {MAX_STOP_CHARS} characters", name)
    return stop


def max_tokens(body: dict, default: int | None, cap: int) -> int:
    """`max_tokens`, at most the server's `cap`; `default` None: the field is required (Anthropic's API)."""
    if default is None and body.get("max_tokens") is None:
        raise BadRequest("'max_tokens' is required", "max_tokens")
    return _max_tokens(body, default, cap)


def _max_tokens(body: dict, default: int, cap: int) -> int:
    """`max_tokens`, or `max_completion_tokens` (OpenAI's newer name for it, which its client sends for newer
    models): either, or both when they agree."""
    name = "max_tokens"
    n = _num(body, name, default, 1, integer=True, limit=INT32_MAX)
    if body.get("max_completion_tokens") is not None:
        newer = _num(body, "max_completion_tokens", default, 1, integer=True, limit=INT32_MAX)
        if body.get("max_tokens") is not None and newer != n:
            raise BadRequest(f"'max_completion_tokens' ({newer}) and 'max_tokens' ({n}) disagree; send one of them",
                             "max_completion_tokens")
        name, n = "max_completion_tokens", newer
    if n > cap:  # each token holds a batch row one more decode step: the server's ceiling, not the device's
        raise BadRequest(f"'{name}' must be at most {cap} on this server (--max-tokens-cap), got {n}", name)
    return n


def _session(body: dict) -> str | None:
    s = body.get("session")
    if s is None:
        return None
    if not isinstance(s, str) or not re.fullmatch(r"[\w.@+-]{1,100}", s):
        raise BadRequest("'session' must be 1-100 letters, digits or . _ - + @", "session")
    return s


# OpenAI's `developer` role is what its newer models call `system` (the client sends it for instructions): the
# template has one place for instructions, so both land there.
_ROLE_ALIASES = {"developer": "system"}


def _messages(body: dict) -> tuple[Message, ...]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or _ROLE_ALIASES.get(role, role) not in ROLES:  # a list is not hashable
            raise BadRequest(f"'messages[{i}].role' must be one of {sorted(ROLES.keys() | _ROLE_ALIASES.keys())}",
                             f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise BadRequest(f"'messages[{i}].content' parts must be text parts", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"'messages[{i}].content' must be a string", f"messages[{i}].content")
        out.append(Message(_ROLE_ALIASES.get(role, role), content))
    return tuple(out)


def _prompt(body: dict) -> str:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str) or not p:
        raise BadRequest("'prompt' must be a non-empty string (one prompt per request)", "prompt")
    return p
