"""Run an ASGI app on uvicorn until interrupted or `stop` is set (the server and the dashboard share it)."""

from __future__ import annotations

import socket
import threading
import time


def run_app(app, host: str, port: int, *, sock: socket.socket | None = None, ready: threading.Event | None = None,
            stop: threading.Event | None = None) -> None:
    """Binds host:port, or serves on `sock` (tests bind a free port first); `ready` is set once it accepts."""
    import uvicorn
    ucfg = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          timeout_graceful_shutdown=5)
    us = uvicorn.Server(ucfg)
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(us, "should_exit", True)), daemon=True).start()
    if ready is not None:
        threading.Thread(target=_signal_ready, args=(us, ready), daemon=True).start()
    us.run(sockets=[sock] if sock is not None else None)


def _signal_ready(us, ready: threading.Event):
    while not us.started:
        time.sleep(0.02)
    ready.set()
