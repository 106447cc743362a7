"""`cli.py dashboard`: a live page of a training run (charts, gate decisions, replay, merges, named states)."""

from __future__ import annotations

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.serve.dashboard.config import DashboardConfig


def add_arguments(p):
    add_dataclass_args(p, DashboardConfig)


def run(args) -> None:
    import logging

    from rwkvjax.serve.dashboard.app import build_dashboard
    from rwkvjax.serve.dashboard.server import serve_dashboard
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rwkvjax").setLevel(logging.INFO)  # not orbax's per-read INFO lines
    cfg = dataclass_from_args(DashboardConfig, args)
    app = build_dashboard(cfg.ckpt_dir, states=cfg.states, api_key=cfg.api_key)  # a missing folder fails here
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    key = f"?key={cfg.api_key}" if cfg.api_key else ""
    print(f"dashboard of {cfg.ckpt_dir} on http://{host}:{cfg.port}/{key} (read-only; Ctrl-C stops)", flush=True)
    serve_dashboard(cfg, app=app)
