"""A generation's way from a parsed request to a running engine job, shared by every API the server speaks
(OpenAI's routes in `serve/app.py`, Anthropic's in `serve/anthropic.py`): the start state and prompt ids
(`prepare`), the job on the engine (`submit`), its events (`next_event`), and the --ttt turn it leaves behind.

Each API answers in its own shape; what it must not do is prepare or run a generation differently, so that the
same conversation gets the same reply whichever API it arrives through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib

from rwkvjax.model.state import State
from rwkvjax.serve.chat import TURN_END
from rwkvjax.serve.engine import Request
from rwkvjax.serve.mixture import read_mark
from rwkvjax.serve.requests import BadRequest, ChatCompletion, Completion


def key_partition(key: str | None) -> str:
    """The prefix-cache partition of a request that passed the key check with `key`: one per API key, so a cache
    hit (and the `cached_tokens` it reports) can only come from a prompt sent with the same key; a digest, so the
    key itself is not kept with every request. A server without a key has one partition: whoever reaches it is
    one principal, with nothing to tell apart (and with one --api-key, all its holders are one principal)."""
    if not key:
        return ""
    return hashlib.sha256(b"rwkvjax prefix partition\0" + key.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Turn:
    """What a generation starts from, once the request is known to be servable."""

    text: str                       # the prompt as text (for a chat: the template's)
    prompt: list[int]               # its token ids
    start: State                    # batch-1 start state
    start_key: str                  # its prefix-cache key
    memory: object                  # the request's scratch session memory, or None
    conversation: tuple[str, str | None] | None  # --ttt: (the conversation's state, its parent); else None


async def prepare(server, request: Completion | ChatCompletion) -> Turn:
    """The start state, prompt ids and memory of a request; with --ttt and a `session`, its conversation (after
    the previous turn's training is done). Raises BadRequest (413; 429 when the tuning queue is full), LookupError
    (an unknown state), UserError. Everything that reads the store or grows with the prompt runs in a worker
    thread: the event loop (`/health`, other clients' streams) never waits on it."""
    conv = None
    session = request.session if isinstance(request, ChatCompletion) else None
    if session is not None and server.tuner is not None:
        conv = server.conversation(request.model, session)
        # an unknown model is a 404 before anything waits
        await asyncio.to_thread(server.start_state, request.model)
        if not server.tuner.admits(conv[0]):
            wait = server.tuner.retry_after_s()
            raise BadRequest(f"test-time training is busy ({server.tuner.s.max_queued} conversations wait for it); "
                             f"retry in {wait} s", "session", 429, "rate_limit_exceeded", {"Retry-After": str(wait)})
        await asyncio.to_thread(server.tuner.wait, conv[0])
    return await asyncio.to_thread(_prepare_turn, server, request, conv)


def _prepare_turn(server, request: Completion | ChatCompletion, conv) -> Turn:
    use = conv[0] if conv is not None and server.has_state(conv[0]) else request.model
    start, start_key = server.start_state(use)
    text = request.prompt_text()
    prompt = server.tokenizer.encode(text)
    if len(prompt) > server.max_prompt_tokens:
        raise BadRequest(f"the prompt is {len(prompt)} tokens; this server takes at most {server.max_prompt_tokens}",
                         request.prompt_field, 413, "context_length_exceeded")
    memory = server.request_memory(use, prompt)
    return Turn(text, prompt, start, start_key, memory, conv)


def submit(server, turn: Turn, request: Completion | ChatCompletion) -> tuple[Request, asyncio.Queue]:
    """The job of a prepared turn, submitted to the engine, and the queue its events arrive on (from the engine
    thread, through the running event loop). Raises the engine's QueueFull or ShuttingDown."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    emit = lambda event, payload: loop.call_soon_threadsafe(events.put_nowait, (event, payload))
    job = Request(turn.prompt, turn.start, turn.start_key, request.sampling, emit, memory=turn.memory,
                  draft_tokens=server.draft_tokens, partition=key_partition(server.api_key))
    server.engine.submit(job)
    if turn.conversation is not None:
        job.on_done = functools.partial(learn_turn, server, turn, job)
    return job, events


def learn_turn(server, turn: Turn, job: Request, reply: str) -> None:
    """A finished --ttt turn goes to the conversation's tuner; its memory is stored with its state."""
    mark = read_mark(turn.prompt + job.mixture.learned) if job.mixture is not None else None
    name, parent = turn.conversation
    server.tuner.submit(name, parent, turn.text + reply + TURN_END, memory=turn.memory, mark=mark)


async def next_event(job: Request, events: asyncio.Queue, req=None):
    """Next engine event; a client (Starlette request `req`) that went away cancels its generation (its row is
    freed) and yields ("gone", None)."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if req is not None and await req.is_disconnected():
                job.cancelled.set()
                return ("gone", None)


async def collect(job: Request, events: asyncio.Queue, req) -> tuple[str, str, object]:
    """A non-streamed reply, gathered: (kind, text, payload). kind "done" (the request's `on_done` has seen the
    text; payload is the engine's done record), or the event that ended it early: "gone" (the client left),
    "error" or "unavailable" (shutting down), with its message. Each API writes the outcome in its own shape."""
    pieces = []
    while True:
        kind, payload = await next_event(job, events, req)
        if kind == "text":
            pieces.append(payload)
            continue
        text = "".join(pieces)
        if kind == "done" and job.on_done is not None:
            job.on_done(text)
        return kind, text, payload
