"""`cli.py merge-stats`: the dynamic tokenizer's table and compression over time, from a checkpoint."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.eval.config import MergeStatsConfig


def add_arguments(p):
    add_dataclass_args(p, MergeStatsConfig)


def run(args) -> None:
    from rwkvjax.eval.inspect import merge_stats
    cfg = dataclass_from_args(MergeStatsConfig, args)
    print(json.dumps(merge_stats(cfg.checkpoint, cfg.top), indent=1, ensure_ascii=False))
