"""Run a blocking `serve(cfg, sock=, ready=, stop=)` function in a thread on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import socket
import threading


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def in_thread(serve_fn, cfg, sock: socket.socket, *, start_s: float, stop_s: float, **kw):
    """Yields the base URL once the server says it is ready; stops it and waits for its thread on exit."""
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=serve_fn, args=(cfg,), kwargs=dict(sock=sock, ready=ready, stop=stop, **kw),
                         daemon=True)
    t.start()
    assert ready.wait(start_s), f"{serve_fn.__name__} did not start within {start_s} s"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        t.join(timeout=stop_s)
