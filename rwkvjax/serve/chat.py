"""The chat template of the RWKV World models, and the validation of OpenAI request bodies.

Template (BlinkDL's RWKV-7 World/G1 format): each message becomes `System: …`, `User: …` or `Assistant: …`,
messages are separated by a blank line, and the prompt ends with `Assistant:` for the model to continue.
Blank lines inside a message are collapsed to one newline, because a blank line ends a turn; the reply
stops at the next blank line (or at a requested stop string). Byte-level models get the same text.
"""

from __future__ import annotations

import math
import re

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
TURN_END = "\n\n"


class BadRequest(Exception):
    """An OpenAI-style 400: `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def chat_prompt(messages: list[dict]) -> str:
    parts = []
    for i, m in enumerate(messages):
        role = ROLES[m["role"]]
        content = re.sub(r"\n{2,}", "\n", m["content"].replace("\r\n", "\n")).strip()
        parts.append(f"{role}: {content}")
    return TURN_END.join(parts) + TURN_END + "Assistant:"


def _num(body: dict, name: str, default, lo=None, hi=None, *, integer=False, lo_open=False):
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}, got {v!r}", name)
    if not math.isfinite(v):
        raise BadRequest(f"'{name}' must be finite, got {v!r}", name)
    if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise BadRequest(f"'{name}' must be in {rng}, got {v!r}", name)
    return int(v) if integer else float(v)


def parse_common(body, *, default_max_tokens: int) -> dict:
    """Fields shared by completions and chat completions, checked; errors name the field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: 'base' or the name of a state (GET /v1/models lists them)", "model")
    n = _num(body, "n", 1, integer=True)
    if n != 1:
        raise BadRequest("'n' must be 1 (one choice per request)", "n")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)) or len(stop) > 4:
        raise BadRequest("'stop' must be a string or a list of at most 4 strings", "stop")
    if any(s == "" for s in stop):
        raise BadRequest("'stop' strings must not be empty", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, got {stream!r}", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    return {
        "model": model, "stream": stream, "include_usage": bool(opts.get("include_usage", False)),
        "max_tokens": _num(body, "max_tokens", default_max_tokens, 1, integer=True),
        "temperature": _num(body, "temperature", 1.0, 0, 2),
        "top_p": _num(body, "top_p", 1.0, 0, 1, lo_open=True),
        "top_k": _num(body, "top_k", 0, 0, integer=True),
        "presence": _num(body, "presence_penalty", 0.0, -2, 2),
        "frequency": _num(body, "frequency_penalty", 0.0, -2, 2),
        "seed": seed, "stop": tuple(stop),
    }


def parse_session(body: dict) -> str | None:
    """The optional `session` field (an rwkvjax extension): names the conversation for test-time training."""
    s = body.get("session")
    if s is None:
        return None
    if not isinstance(s, str) or not re.fullmatch(r"[\w.@+-]{1,100}", s):
        raise BadRequest("'session' must be 1-100 letters, digits or . _ - + @", "session")
    return s


def parse_messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"'messages[{i}].role' must be one of {sorted(ROLES)}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise BadRequest(f"'messages[{i}].content' parts must be text parts", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"'messages[{i}].content' must be a string", f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    return out


def parse_prompt(body: dict) -> str:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str) or not p:
        raise BadRequest("'prompt' must be a non-empty string (one prompt per request)", "prompt")
    return p
