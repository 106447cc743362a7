"""The OpenAI-compatible HTTP surface (Starlette on uvicorn): completions, chat completions, models, health, and
Prometheus metrics (`serve.metrics`: one registry per app, so per server).

`model` in a request selects the start state: `base` (the model's own) or a named state of the store,
read when asked for, so a state written by `train` or `state fork` is servable without a restart; with the
session memory on, also the memory the request samples with (`Server.request_memory`).
Errors always have OpenAI's shape `{"error": {message, type, param, code}}`; no traceback reaches a client.

One handler per route, at module level; each reads the `serve.server.Server` from `request.app.state.server`,
which `build_app` puts there. A body is parsed once, into a `serve.requests` value, before anything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rwkvjax.errors import UserError
from rwkvjax.serve import anthropic
from rwkvjax.serve.access import JOB, LOGGED, client_of, printable
from rwkvjax.serve.engine import QueueFull, Request, ShuttingDown
from rwkvjax.serve.guard import key_ok  # here too: the dashboard checks keys the same way, without the engine
from rwkvjax.serve.metrics import CONTENT_TYPE, CountRequests, Metrics, decode_figures
from rwkvjax.serve.requests import BadRequest, ChatCompletion, Completion, read_body, read_json
from rwkvjax.serve.turns import collect, next_event as _next, prepare as _prepare, submit

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "server_error"}


def error(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
    return JSONResponse({"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                                   "param": param, "code": code}}, status_code=status, headers=headers)


def build_app(server) -> Starlette:
    """`server`: a `serve.server.Server` (model, tokenizer, engine, states, limits), shared by every handler."""
    routes = [Route("/health", health), Route("/v1/models", models), Route("/metrics", metrics),
              Route("/v1/models/{id:path}", model),  # state names may hold '/' (project/experiment)
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/messages", anthropic.messages, methods=["POST"])]  # Anthropic's Messages API
    measured = Metrics(server.engine.stats)  # this server's own registry: one process may run several servers
    server.engine.observer = measured
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, ClientDisconnect: disconnected,
                                                       Exception: internal},
                    middleware=[Middleware(CountRequests, metrics=measured)])
    app.state.server = server
    app.state.metrics = measured
    return app


def _shutting_down(message: str):
    return error(503, message, code="server_shutting_down", headers={"Retry-After": "1"})


def _refused():
    return error(401, "missing or wrong API key (send 'Authorization: Bearer <key>' or 'x-api-key: <key>')",
                 code="invalid_api_key")


def _keyed(handler):
    """The route answers 401 unless the request carries the server's API key (when it has one). Per route rather
    than a middleware: an unknown path stays a 404, and a dashboard mounted beside the routes checks its own."""
    @functools.wraps(handler)
    async def checked(req: HttpRequest):
        if not key_ok(req, req.app.state.server.api_key):
            return _refused()
        return await handler(req)
    return checked


async def health(req: HttpRequest):
    """Open to all (a load balancer's probe carries no key): a bare status without the key, the model's name and
    the engine's counters with it."""
    server = req.app.state.server
    if not key_ok(req, server.api_key):
        return JSONResponse({"status": "ok"})
    ttt = {} if server.tuner is None else {"ttt": server.tuner.stats()}  # queue, coalesced, skipped, evicted
    return JSONResponse({"status": "ok", "model": server.model_name, **server.engine.stats(), **ttt})


@_keyed
async def models(req: HttpRequest):
    now = int(time.time())
    listed = await asyncio.to_thread(req.app.state.server.model_list)  # reads the store: off the event loop
    data = [{"id": name, "object": "model", "created": created or now, "owned_by": "rwkvjax", **extra}
            for name, created, extra in listed]
    return JSONResponse({"object": "list", "data": data})


@_keyed
async def model(req: HttpRequest):
    """One entry of `/v1/models` (what `client.models.retrieve(id)` asks for); a 404 for an id it does not list."""
    want = req.path_params["id"]
    listed = await asyncio.to_thread(req.app.state.server.model_list)
    for name, created, extra in listed:
        if name == want:
            return JSONResponse({"id": name, "object": "model", "created": created or int(time.time()),
                                 "owned_by": "rwkvjax", **extra})
    return error(404, f"model {want[:200]!r} does not exist (GET /v1/models lists them)", "model", "model_not_found")


@_keyed
async def metrics(req: HttpRequest):
    """Prometheus's text format. Behind the API key like every route that tells about use: the state names it
    labels are the projects of whoever uses the server, and its counts are their traffic (Prometheus sends a key
    with `authorization: {credentials: ...}` in its scrape config)."""
    return Response(req.app.state.metrics.render(), media_type=CONTENT_TYPE)


@_keyed
async def completions(req: HttpRequest):
    return await _generate(req, Completion)


@_keyed
async def chat_completions(req: HttpRequest):
    return await _generate(req, ChatCompletion)


async def not_found(req: HttpRequest, exc: HTTPException):
    return error(exc.status_code, f"{req.method} {req.url.path}: {exc.detail}")


async def disconnected(req: HttpRequest, exc: ClientDisconnect):
    """A client that went away while its body was read: one line (it is the request's access-log line too), not
    the tracebacks of an unhandled exception; the 499 goes nowhere but into the log."""
    log.warning("client %s disconnected during upload of %s %s", client_of(req.scope), req.method,
                printable(req.url.path))
    req.scope.setdefault("state", {})[LOGGED] = True
    return error(499, "client disconnected")


async def internal(req: HttpRequest, exc: Exception):
    log.exception("request failed")
    return error(500, "internal server error")


@dataclasses.dataclass(frozen=True)
class _Reply:
    """What every response body of one request repeats."""

    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool

    def body(self, obj: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices,
                **extra}


async def _generate(req: HttpRequest, kind: type[Completion] | type[ChatCompletion]):
    server = req.app.state.server
    try:
        raw = await read_body(req, max_bytes=server.max_body_bytes, timeout_s=server.read_timeout_s)
        # parsing is O(body): off the event loop, like everything else O(prompt) (`_prepare`)
        request = await asyncio.to_thread(_parse, server, kind, raw)
        turn = await _prepare(server, request)
    except BadRequest as e:
        return error(e.status, e.message, e.param, e.code, headers=e.headers)
    except LookupError as e:
        return error(404, str(e), "model", "model_not_found")
    except UserError as e:  # a stored state or memory that cannot be used: the operator's to fix
        return error(500, str(e), "model")

    try:
        job, events = submit(server, turn, request)
    except QueueFull as e:
        return error(429, f"the server is busy ({e}); retry shortly", code="rate_limit_exceeded",
                     headers={"Retry-After": "1"})
    except ShuttingDown as e:
        return _shutting_down(str(e))
    req.scope.setdefault("state", {})[JOB] = job  # the access log's token counts
    req.app.state.metrics.started(request.model)  # only now: a name that resolved to no state is not a label
    reply = _Reply(("chatcmpl-" if request.chat else "cmpl-") + uuid.uuid4().hex[:24], int(time.time()),
                   request.model, request.chat, request.include_usage)
    if request.stream:
        return StreamingResponse(_stream(job, events, reply), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(req, job, events, reply)


def _parse(server, kind: type[Completion] | type[ChatCompletion], raw: bytes) -> Completion | ChatCompletion:
    return kind.parse(read_json(raw), default_max_tokens=server.default_max_tokens,
                      max_tokens_cap=server.max_tokens_cap)


async def _collect(req: HttpRequest, job: Request, events: asyncio.Queue, reply: _Reply):
    kind, text, payload = await collect(job, events, req)
    if kind == "gone":
        return error(499, "client disconnected")
    if kind == "error":
        return error(500, payload)
    if kind == "unavailable":
        return _shutting_down(payload)
    if reply.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text.lstrip(" ")},
                  "finish_reason": payload["finish_reason"], "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": payload["finish_reason"], "logprobs": None}
        obj = "text_completion"
    return JSONResponse(reply.body(obj, [choice], usage=_usage(payload, job)))


async def _stream(job: Request, events: asyncio.Queue, reply: _Reply):
    obj = "chat.completion.chunk" if reply.chat else "text_completion"
    frame = lambda choices, **kw: "data: " + json.dumps(reply.body(obj, choices, **kw)) + "\n\n"
    started, pieces = False, []
    try:
        if reply.chat:
            yield frame([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        while True:
            kind, payload = await _next(job, events)
            if kind == "text":
                if reply.chat and not started:
                    payload = payload.lstrip(" ")
                    if not payload:
                        continue
                started = True
                pieces.append(payload)
                yield frame([{"index": 0, "delta": {"content": payload}, "finish_reason": None}] if reply.chat else
                            [{"index": 0, "text": payload, "finish_reason": None, "logprobs": None}])
            elif kind in ("error", "unavailable"):
                code = "server_shutting_down" if kind == "unavailable" else None
                yield "data: " + json.dumps({"error": {"message": payload, "type": "server_error",
                                                       "param": None, "code": code}}) + "\n\n"
                break
            else:
                if job.on_done is not None:
                    job.on_done("".join(pieces))
                end = {"index": 0, "finish_reason": payload["finish_reason"]}
                yield frame([{**end, "delta": {}}] if reply.chat else [{**end, "text": "", "logprobs": None}])
                if reply.include_usage:
                    yield frame([], usage=_usage(payload, job))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # a no-op after "done"; frees the row when the client went away mid-stream


def _usage(done: dict, job: Request) -> dict:
    """OpenAI's usage, and the reply's speed (`tokens_per_second`, `time_to_first_token_ms`: `decode_figures`) as
    extra fields, which OpenAI's client keeps (`usage.model_extra`)."""
    return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
            "total_tokens": done["prompt_tokens"] + done["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": done["cached_tokens"]}, **decode_figures(job)}
