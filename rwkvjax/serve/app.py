"""The OpenAI-compatible HTTP surface (Starlette on uvicorn): completions, chat completions, models, health.

`model` in a request selects the start state: `base` (the model's own) or a named state of the store,
read when asked for, so a state written by `train` or `state fork` is servable without a restart; with the
session memory on, also the memory the request samples with (`Server.request_memory`).
Errors always have OpenAI's shape `{"error": {message, type, param, code}}`; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from rwkvjax.errors import UserError
from rwkvjax.serve.chat import (
    TURN_END,
    BadRequest,
    chat_prompt,
    parse_common,
    parse_messages,
    parse_prompt,
    parse_session,
)
from rwkvjax.serve.engine import QueueFull, Request, Sampling
from rwkvjax.serve.mixture import read_mark

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "server_error"}


def error(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
    return JSONResponse({"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                                   "param": param, "code": code}}, status_code=status, headers=headers)


def build_app(server) -> Starlette:
    """`server`: a `serve.server.Server` (model, tokenizer, engine, states, limits)."""

    def authorized(req: HttpRequest) -> bool:
        if not server.api_key:
            return True
        return req.headers.get("authorization", "") == f"Bearer {server.api_key}"

    async def health(req: HttpRequest):
        if not authorized(req):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")
        return JSONResponse({"status": "ok", "model": server.model_name, **server.engine.stats()})

    async def models(req: HttpRequest):
        if not authorized(req):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": created or now, "owned_by": "rwkvjax", **extra}
                for name, created, extra in server.model_list()]
        return JSONResponse({"object": "list", "data": data})

    async def completions(req: HttpRequest):
        return await _generate(req, chat=False)

    async def chat_completions(req: HttpRequest):
        return await _generate(req, chat=True)

    async def _generate(req: HttpRequest, *, chat: bool):
        if not authorized(req):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")
        try:
            raw = await req.body()
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadRequest(f"the body is not valid JSON ({e})") from None
            p = parse_common(body, default_max_tokens=server.default_max_tokens)
            text = chat_prompt(parse_messages(body)) if chat else parse_prompt(body)
            if chat:
                p["stop"] = tuple(dict.fromkeys(p["stop"] + (TURN_END,)))
            session = parse_session(body) if chat else None
            conv = None
            if session is not None and server.tuner is not None:
                conv = server.conversation(p["model"], session)
                server.start_state(p["model"])  # an unknown model is a 404 before anything waits
                await asyncio.to_thread(server.tuner.wait, conv[0])
            use = conv[0] if conv is not None and server.has_state(conv[0]) else p["model"]
            start, start_key = server.start_state(use)
            prompt = server.tokenizer.encode(text)
            if len(prompt) > server.max_prompt_tokens:
                raise BadRequest(f"the prompt is {len(prompt)} tokens; this server takes at most "
                                 f"{server.max_prompt_tokens}", "messages" if chat else "prompt", 413,
                                 "context_length_exceeded")
            memory = await asyncio.to_thread(server.request_memory, use, prompt)
        except BadRequest as e:
            return error(e.status, e.message, e.param, e.code)
        except LookupError as e:
            return error(404, str(e), "model", "model_not_found")
        except UserError as e:  # a stored state or memory that cannot be used: the operator's to fix
            return error(500, str(e), "model")

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        emit = lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
        sampling = Sampling(max_tokens=p["max_tokens"], temperature=p["temperature"], top_p=p["top_p"],
                            top_k=p["top_k"], presence=p["presence"], frequency=p["frequency"], seed=p["seed"],
                            stop=p["stop"])
        job = Request(prompt, start, start_key, sampling, emit, memory=memory, draft_tokens=server.draft_tokens)
        try:
            server.engine.submit(job)
        except QueueFull as e:
            return error(429, f"the server is busy ({e}); retry shortly", code="rate_limit_exceeded",
                         headers={"Retry-After": "1"})
        if conv is not None:
            def on_done(reply: str) -> None:  # the conversation's memory is stored with its state
                mark = read_mark(prompt + job.mixture.learned) if job.mixture is not None else None
                server.tuner.submit(conv[0], conv[1], text + reply + TURN_END, memory=memory, mark=mark)
            job.on_done = on_done
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if p["stream"]:
            return StreamingResponse(_stream(job, events, rid, created, p, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(req, job, events, rid, created, p, chat)

    async def _next(job: Request, events: asyncio.Queue, req: HttpRequest | None = None):
        """Next engine event; a client that went away cancels its generation (its row is freed)."""
        while True:
            try:
                return await asyncio.wait_for(events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if req is not None and await req.is_disconnected():
                    job.cancelled.set()
                    return ("gone", None)

    async def _collect(req, job, events, rid, created, p, chat):
        pieces = []
        while True:
            kind, payload = await _next(job, events, req)
            if kind == "text":
                pieces.append(payload)
            elif kind == "gone":
                return error(499, "client disconnected")
            elif kind == "error":
                return error(500, payload)
            else:
                text = "".join(pieces)
                if job.on_done is not None:
                    job.on_done(text)
                usage = _usage(payload)
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text.lstrip(" ")},
                              "finish_reason": payload["finish_reason"], "logprobs": None}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": text, "finish_reason": payload["finish_reason"], "logprobs": None}
                    obj = "text_completion"
                return JSONResponse({"id": rid, "object": obj, "created": created, "model": p["model"],
                                     "choices": [choice], "usage": usage})

    async def _stream(job, events, rid, created, p, chat):
        obj = "chat.completion.chunk" if chat else "text_completion"
        frame = lambda choices, **kw: "data: " + json.dumps({"id": rid, "object": obj, "created": created,
                                                             "model": p["model"], "choices": choices, **kw}) + "\n\n"
        started, pieces = False, []
        try:
            if chat:
                yield frame([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            while True:
                kind, payload = await _next(job, events)
                if kind == "text":
                    if chat and not started:
                        payload = payload.lstrip(" ")
                        if not payload:
                            continue
                    started = True
                    pieces.append(payload)
                    delta = {"content": payload} if chat else None
                    yield frame([{"index": 0, "delta": delta, "finish_reason": None}] if chat else
                                [{"index": 0, "text": payload, "finish_reason": None, "logprobs": None}])
                elif kind == "error":
                    yield "data: " + json.dumps({"error": {"message": payload, "type": "server_error",
                                                           "param": None, "code": None}}) + "\n\n"
                    break
                else:
                    if job.on_done is not None:
                        job.on_done("".join(pieces))
                    end = {"index": 0, "finish_reason": payload["finish_reason"]}
                    yield frame([{**end, "delta": {}}] if chat else [{**end, "text": "", "logprobs": None}])
                    if p["include_usage"]:
                        yield frame([], usage=_usage(payload))
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a no-op after "done"; frees the row when the client went away mid-stream

    async def not_found(req, exc: HTTPException):
        return error(exc.status_code, f"{req.method} {req.url.path}: {exc.detail}")

    async def internal(req, exc: Exception):
        log.exception("request failed")
        return error(500, "internal server error")

    routes = [Route("/health", health), Route("/v1/models", models),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: internal})


def _usage(done: dict) -> dict:
    return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
            "total_tokens": done["prompt_tokens"] + done["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": done["cached_tokens"]}}
