"""`cli.py serve`: an OpenAI-compatible HTTP server for the model and its named states."""

from __future__ import annotations

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.serve.config import ServeConfig


def add_arguments(p):
    add_dataclass_args(p, ServeConfig)


def run(args) -> None:
    import logging

    from rwkvjax.io.convert import refuse_slow_dtype
    from rwkvjax.serve.server import serve
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = dataclass_from_args(ServeConfig, args)
    refuse_slow_dtype(cfg.dtype)
    print(f"serving {cfg.model} on http://{cfg.host}:{cfg.port}/v1 (Ctrl-C stops)", flush=True)
    serve(cfg)
