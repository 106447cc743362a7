"""`cli.py pretrain`: train every weight of a new RWKV-7 on text files (resumable)."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, add_progress_flag, apply_progress_flag, dataclass_from_args
from rwkvjax.train.config import PretrainConfig


def add_arguments(p):
    add_dataclass_args(p, PretrainConfig)
    add_progress_flag(p)


def run(args) -> None:
    apply_progress_flag(args)
    from rwkvjax.train.pretrain import pretrain
    print(json.dumps(pretrain(dataclass_from_args(PretrainConfig, args))))
