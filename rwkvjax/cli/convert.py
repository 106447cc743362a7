"""`cli.py convert`: any supported checkpoint -> one safetensors file with official tensor names."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.io.config import ConvertConfig


def add_arguments(p):
    add_dataclass_args(p, ConvertConfig)


def run(args) -> None:
    from rwkvjax.io.convert import convert
    cfg = dataclass_from_args(ConvertConfig, args)
    print(json.dumps(convert(cfg.src, cfg.out, cfg.dtype), indent=1))
