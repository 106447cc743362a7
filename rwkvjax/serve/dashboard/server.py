"""`python cli.py dashboard`: the dashboard app of one run folder on uvicorn."""

from __future__ import annotations

import logging
import socket
import threading

from rwkvjax.serve.dashboard.app import build_dashboard
from rwkvjax.serve.dashboard.config import DashboardConfig
from rwkvjax.serve.guard import guarded
from rwkvjax.serve.http import run_app

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_dashboard(cfg: DashboardConfig, *, app=None, sock: socket.socket | None = None,
                    ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    """Run until interrupted (or `stop` is set). Binds cfg.host:cfg.port, or uses `sock` (tests).
    `app`: the one `build_dashboard(cfg...)` made (default: built here)."""
    if app is None:
        app = build_dashboard(cfg.ckpt_dir, states=cfg.states, api_key=cfg.api_key)
    if cfg.host not in LOOPBACK and not cfg.api_key:
        log.warning("dashboard on %s without --api-key: anyone who can reach it can read the run's session text",
                    cfg.host)
    run_app(guarded(app, cfg.host, cfg.cors_origin), cfg.host, cfg.port, sock=sock, ready=ready, stop=stop)
