"""Run an ASGI app on uvicorn until interrupted or `stop` is set (the server and the dashboard share it)."""

from __future__ import annotations

import socket
import threading
import time


# What a shutdown waits for open connections beyond the app's own drain (`on_stop`): a reply's final events
# written after the drain's deadline, and the connections closed.
CLOSE_MARGIN_S = 2.0


def run_app(app, host: str, port: int, *, sock: socket.socket | None = None, ready: threading.Event | None = None,
            stop: threading.Event | None = None, on_stop=None, drain_s: float = 3.0, read_timeout_s: float = 15.0,
            max_connections: int = 512) -> None:
    """Binds host:port, or serves on `sock` (tests bind a free port first); `ready` is set once it accepts.

    On SIGINT/SIGTERM (or `stop`), uvicorn stops listening and waits for open connections; `on_stop()` is called
    first, so the app can refuse new requests and end running ones by its deadline `drain_s` (the server's
    engine drain). Connections still open `drain_s + CLOSE_MARGIN_S` after the stop are cut.
    `read_timeout_s`: a request's headers must be complete this long after the server can read them, else the
    connection is closed (`serve.limits`); `max_connections`: beyond it uvicorn answers 503."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            if on_stop is not None:
                on_stop()
            await super().shutdown(sockets)

    from rwkvjax.serve.limits import HEADER_BYTES, KEEP_ALIVE_S, header_deadline_protocol
    ucfg = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          timeout_graceful_shutdown=drain_s + CLOSE_MARGIN_S,
                          http=header_deadline_protocol(read_timeout_s), limit_concurrency=max_connections,
                          h11_max_incomplete_event_size=HEADER_BYTES, timeout_keep_alive=KEEP_ALIVE_S)
    us = _Server(ucfg)
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(us, "should_exit", True)), daemon=True).start()
    if ready is not None:
        threading.Thread(target=_signal_ready, args=(us, ready), daemon=True).start()
    us.run(sockets=[sock] if sock is not None else None)


def _signal_ready(us, ready: threading.Event):
    while not us.started:
        time.sleep(0.02)
    ready.set()
