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
    # the progress lines ("compiling ...", then "serving ... on ..." once the port accepts) go to stdout as they come
    serve(cfg, say=lambda line: print(line, flush=True))
