"""The server's access log: one line per request on the `rwkvjax.serve.access` logger (the server's stderr).

A line says who asked (the client's address), the method and path, the status, how long the answer took (for a
stream: until its last byte) and, for a generation, its tokens in and out. Never the body, the query string or
any header: a prompt and the API key stay out of the log. Pure ASGI and outermost, so the requests the cross-site
checks refuse are logged too.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

# The scope-state entries the app fills in: the engine's request of a generation (its token counts), and a mark
# on a request the app has already written its one line about (a client that went away mid-upload).
JOB = "rwkvjax.job"
LOGGED = "rwkvjax.logged"


def printable(text: str, limit: int = 200) -> str:
    """`text` as one line that cannot be taken for another: control characters, quotes and backslashes escaped
    (a path is percent-decoded, so a client can put a newline in it), and at most `limit` characters."""
    out = "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def client_of(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLog:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})  # shared with the app's requests (`Request.state`)
        status = []

        async def sending(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not state.get(LOGGED):
                log.info("%s", line(scope, status[0] if status else None, time.perf_counter() - t0, state.get(JOB)))


def line(scope, status: int | None, seconds: float, job=None) -> str:
    """`127.0.0.1:50312 "POST /v1/chat/completions" 200 1234 ms tokens 12/34` (no status: none was sent)."""
    out = (f'{client_of(scope)} "{printable(scope.get("method", "-"))} {printable(scope.get("path", "-"))}" '
           f'{status if status is not None else "-"} {seconds * 1000:.0f} ms')
    if job is not None:
        out += f" tokens {len(job.prompt)}/{len(job.generated)}"
    return out
