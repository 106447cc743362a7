"""The dashboard on 127.0.0.1 (a free port) in a thread, and JSON reads from it, for the dashboard tests."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request

from rwkvjax.serve.dashboard.config import DashboardConfig
from rwkvjax.serve.dashboard.server import serve_dashboard


@contextlib.contextmanager
def running_dashboard(ckpt_dir, **kw):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    cfg = DashboardConfig(ckpt_dir=str(ckpt_dir), port=sock.getsockname()[1], **kw)
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=serve_dashboard, args=(cfg,), kwargs=dict(sock=sock, ready=ready, stop=stop),
                         daemon=True)
    t.start()
    assert ready.wait(60), "dashboard did not start"
    try:
        yield f"http://127.0.0.1:{cfg.port}"
    finally:
        stop.set()
        t.join(timeout=30)


def get(url: str, headers=None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, headers=None) -> dict:
    status, _, body = get(url, headers)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)
