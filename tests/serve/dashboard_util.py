"""The dashboard on 127.0.0.1 (a free port) in a thread, and JSON reads from it, for the dashboard tests."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request

from rwkvjax.serve.dashboard.config import DashboardConfig
from rwkvjax.serve.dashboard.server import serve_dashboard
from tests.tools.local_server import free_socket, in_thread


@contextlib.contextmanager
def running_dashboard(ckpt_dir, **kw):
    sock = free_socket()
    cfg = DashboardConfig(ckpt_dir=str(ckpt_dir), port=sock.getsockname()[1], **kw)
    with in_thread(serve_dashboard, cfg, sock, start_s=60, stop_s=30) as url:
        yield url


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
