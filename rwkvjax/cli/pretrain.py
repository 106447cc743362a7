"""`cli.py pretrain`: train every weight of a new RWKV-7 on text files (resumable)."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.train.config import PretrainConfig


def add_arguments(p):
    add_dataclass_args(p, PretrainConfig)


def run(args) -> None:
    from rwkvjax.train.pretrain import pretrain
    print(json.dumps(pretrain(dataclass_from_args(PretrainConfig, args))))
