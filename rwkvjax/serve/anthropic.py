"""The Anthropic Messages API: `POST /v1/messages`, for clients that speak it (Anthropic's SDKs, Claude Code pointed
at a local URL).

A request becomes the same chat as `POST /v1/chat/completions` would make of the same conversation: `system` is
the first message, `messages` follow, and the prompt is the World chat template's (`serve/chat.py`); it is prepared
and run by the same code (`serve/turns.py`), so both APIs give the same reply. Only the shapes differ: the reply
is a message with one text block, streaming follows Anthropic's event sequence (`message_start`,
`content_block_start`, `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`, `message_stop`),
and errors read `{"type": "error", "error": {"type", "message"}}`.

Supported: `model` (`base` or a named state), `system` (a string or text blocks), `messages` (user and assistant
turns; content a string or text blocks), `max_tokens` (required), `stop_sequences`, `temperature`, `top_p`,
`top_k`, `stream`, `metadata` (accepted, unused). Anything else (tools, images, documents, thinking, ...) is a 400
that names it: a client must not take an ignored field for an honoured one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import ClassVar

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, StreamingResponse

from rwkvjax.errors import UserError
from rwkvjax.serve.access import JOB
from rwkvjax.serve.chat import TURN_END, Message
from rwkvjax.serve.engine import QueueFull, Request, Sampling, ShuttingDown
from rwkvjax.serve.guard import key_ok
from rwkvjax.serve.metrics import decode_figures
from rwkvjax.serve.requests import (INT32_MAX, BadRequest, ChatCompletion, _num, max_tokens, read_body, read_json,
                                    stop_strings)
from rwkvjax.serve.turns import collect, next_event, prepare, submit

# The request's fields. `metadata` (`user_id`) is what Anthropic keeps for abuse reports: this server has no
# per-user records to attach it to, so it is checked for shape and otherwise unused. `cache_control` (here or on a
# text block) asks Anthropic to cache the prompt; this server's prefix cache keeps the state after every prompt
# already (per API key), so it is honoured without being read.
FIELDS = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k",
                    "stream", "metadata", "cache_control"})
# Content blocks other than text, by the names clients send; refused with a message that says so.
OTHER_BLOCKS = ("image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
# A text block's keys (on `cache_control`, see FIELDS).
TEXT_BLOCK_KEYS = frozenset({"type", "text", "cache_control"})
# The detokenizer scans every stop string at every token: a bound keeps that cost small.
MAX_STOP_SEQUENCES = 16
ROLES = ("user", "assistant")

# Anthropic's error types by HTTP status; 503 (this server draining for a shutdown) is Anthropic's "overloaded".
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               503: "overloaded_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "invalid_request_error"), "message": message}}


def error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Messages(ChatCompletion):
    """A Messages request as the chat it is: `messages` holds the system prompt first, then the turns, so its
    prompt text is `ChatCompletion`'s. `sampling.stop` also holds the turn end; `stop_sequences` the client's own
    (a reply they end has stop_reason `stop_sequence`; one the turn end or the end of text ends, `end_turn`)."""

    stop_sequences: tuple[str, ...] = ()

    prompt_field: ClassVar[str] = "messages"

    @classmethod
    def parse(cls, body, *, max_tokens_cap: int = INT32_MAX) -> Messages:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", None)
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise BadRequest(f"unsupported field{'s' if len(unknown) > 1 else ''} {names}: this server takes "
                             f"only {', '.join(sorted(FIELDS))} (no tools, images, documents or thinking)",
                             unknown[0])
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: 'base' or the name of a state (GET /v1/models lists them)",
                             "model")
        turns = _system(body.get("system")) + _turns(body.get("messages"))
        stops = stop_strings(body, "stop_sequences", MAX_STOP_SEQUENCES, one_string=False)
        sampling = Sampling(
            max_tokens=max_tokens(body, None, max_tokens_cap),
            temperature=_num(body, "temperature", 1.0, 0, 1),  # Anthropic's range
            top_p=_num(body, "top_p", 1.0, 0, 1, lo_open=True),
            top_k=_num(body, "top_k", 0, 0, integer=True, limit=INT32_MAX),
            # a reply ends with its turn, as a chat completion's does
            stop=tuple(dict.fromkeys(stops + [TURN_END])))
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest(f"'stream' must be true or false, got {stream!r}", "stream")
        meta = body.get("metadata")
        if meta is not None and not (isinstance(meta, dict) and set(meta) <= {"user_id"}
                                     and isinstance(meta.get("user_id", ""), (str, type(None)))):
            raise BadRequest("'metadata' must be an object with at most a string 'user_id'", "metadata")
        if not isinstance(body.get("cache_control", {}), (dict, type(None))):
            raise BadRequest("'cache_control' must be an object", "cache_control")
        return cls(model=model, messages=turns, sampling=sampling, stream=stream, stop_sequences=tuple(stops))


def _text(content, field: str) -> str:
    """A string, or a list of text blocks joined (as a chat completion joins its text parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{field}' must be a string or a list of text blocks", field)
    parts = []
    for j, block in enumerate(content):
        where = f"{field}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in OTHER_BLOCKS:
            raise BadRequest(f"'{where}' is a {kind!r} block: not supported; this server takes text blocks only "
                             f"({', '.join(OTHER_BLOCKS)} are not supported)", f"{where}.type")
        if kind != "text":
            raise BadRequest(f"'{where}' must be a text block {{\"type\": \"text\", \"text\": ...}}", where)
        extra = sorted(set(block) - TEXT_BLOCK_KEYS)
        if extra:
            raise BadRequest(f"'{where}' has unsupported key(s) {', '.join(repr(k) for k in extra)}",
                             f"{where}.{extra[0]}")
        if not isinstance(block.get("text"), str):
            raise BadRequest(f"'{where}.text' must be a string", f"{where}.text")
        parts.append(block["text"])
    return "".join(parts)


def _system(system) -> tuple[Message, ...]:
    if system is None:
        return ()
    text = _text(system, "system")
    return (Message("system", text),) if text.strip() else ()


def _turns(msgs) -> tuple[Message, ...]:
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest(f"'messages[{i}].role' must be 'user' or 'assistant' (the system prompt is 'system')",
                             f"messages[{i}].role")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise BadRequest(f"'messages[{i}]' has unsupported key(s) {', '.join(repr(k) for k in extra)}",
                             f"messages[{i}].{extra[0]}")
        out.append(Message(role, _text(m.get("content"), f"messages[{i}].content")))
    if out[-1].role != "user":
        # Anthropic continues a final assistant turn ("prefill"); the chat template would start a new turn after
        # it instead, a different reply from the one asked for
        raise BadRequest("the last message must be the user's: continuing an assistant turn (prefill) is not "
                         "supported", f"messages[{len(out) - 1}].role")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class _Reply:
    """What the response of one request repeats."""

    id: str
    model: str
    input_tokens: int
    stop_sequences: tuple[str, ...]

    def message(self, content: list, stop_reason: str | None, stop_sequence: str | None, usage: dict) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}

    def stop(self, done: dict) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence) of a finished generation."""
        if done["finish_reason"] == "length":  # max_tokens, or the shutdown's deadline cut it there
            return "max_tokens", None
        matched = done.get("stop_sequence")
        if matched is not None and matched in self.stop_sequences:
            return "stop_sequence", matched
        return "end_turn", None


def _usage(done: dict, job: Request) -> dict:
    # the speed figures are this server's additions, as on the OpenAI routes (the client keeps unknown fields)
    return {"input_tokens": done["prompt_tokens"], "output_tokens": done["completion_tokens"],
            "cache_read_input_tokens": done["cached_tokens"], **decode_figures(job)}


async def messages(req: HttpRequest):
    server = req.app.state.server
    if not key_ok(req, server.api_key):
        return error(401, "missing or wrong API key (send 'x-api-key: <key>' or 'Authorization: Bearer <key>')")
    try:
        raw = await read_body(req, max_bytes=server.max_body_bytes, timeout_s=server.read_timeout_s)
        # parsing is O(body): off the event loop, as for the OpenAI routes
        request = await asyncio.to_thread(lambda: Messages.parse(read_json(raw), max_tokens_cap=server.max_tokens_cap))
        turn = await prepare(server, request)
    except BadRequest as e:
        return error(e.status, e.message, headers=e.headers)
    except LookupError as e:
        return error(404, f"model: {e}")
    except UserError as e:  # a stored state that cannot be used: the operator's to fix
        return error(500, f"model: {e}")
    try:
        job, events = submit(server, turn, request)
    except QueueFull as e:
        return error(429, f"the server is busy ({e}); retry shortly", headers={"Retry-After": "1"})
    except ShuttingDown as e:
        return error(503, str(e), headers={"Retry-After": "1"})
    req.scope.setdefault("state", {})[JOB] = job  # the access log's token counts
    req.app.state.metrics.started(request.model)  # only now: a name that resolved to no state is not a label
    reply = _Reply("msg_" + uuid.uuid4().hex[:24], request.model, len(turn.prompt), request.stop_sequences)
    if request.stream:
        return StreamingResponse(_stream(job, events, reply), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(req, job, events, reply)


async def _collect(req: HttpRequest, job: Request, events: asyncio.Queue, reply: _Reply):
    kind, text, payload = await collect(job, events, req)
    if kind == "gone":
        return error(499, "client disconnected")
    if kind == "error":
        return error(500, payload)
    if kind == "unavailable":
        return error(503, payload, headers={"Retry-After": "1"})
    stop_reason, stop_sequence = reply.stop(payload)
    # the template's "Assistant:" is followed by a space the model writes: not part of the reply
    content = [{"type": "text", "text": text.lstrip(" ")}]
    return JSONResponse(reply.message(content, stop_reason, stop_sequence, _usage(payload, job)))


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def _stream(job: Request, events: asyncio.Queue, reply: _Reply):
    started, pieces = False, []
    try:
        yield _event("message_start", {"type": "message_start", "message": reply.message(
            [], None, None, {"input_tokens": reply.input_tokens, "output_tokens": 0})})
        yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        yield _event("ping", {"type": "ping"})
        while True:
            kind, payload = await next_event(job, events)
            if kind == "text":
                if not started:  # as in `_collect`: the space after "Assistant:" is the template's
                    payload = payload.lstrip(" ")
                    if not payload:
                        continue
                started = True
                pieces.append(payload)
                yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": payload}})
            elif kind in ("error", "unavailable"):
                yield _event("error", error_body(503 if kind == "unavailable" else 500, payload))
                break
            else:
                if job.on_done is not None:
                    job.on_done("".join(pieces))
                stop_reason, stop_sequence = reply.stop(payload)
                yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
                yield _event("message_delta", {"type": "message_delta",
                                               "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                               "usage": {"output_tokens": payload["completion_tokens"]}})
                yield _event("message_stop", {"type": "message_stop"})
                break
    finally:
        job.cancelled.set()  # a no-op after "done"; frees the row when the client went away mid-stream
