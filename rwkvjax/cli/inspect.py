"""`cli.py inspect`: what a training checkpoint learned (read-only; works while a trainer runs)."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.eval.config import InspectConfig


def add_arguments(p):
    add_dataclass_args(p, InspectConfig)


def run(args) -> None:
    cfg = dataclass_from_args(InspectConfig, args)
    if cfg.plot:
        from rwkvjax.extras import require
        require("matplotlib", "plot", "--plot")
    from rwkvjax.eval.inspect import format_inspect, inspect, plot
    rep = inspect(cfg.checkpoint, last=cfg.last)
    if cfg.plot:
        rep["plot"] = plot(cfg.checkpoint, cfg.plot)
    print(json.dumps(rep, indent=1, ensure_ascii=False) if cfg.json else format_inspect(rep))
