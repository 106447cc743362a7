"""`cli.py consolidate`: sleep consolidation of a per-project run's states into its global state."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, add_progress_flag, apply_progress_flag, dataclass_from_args
from rwkvjax.train.config import ConsolidateConfig


def add_arguments(p):
    add_dataclass_args(p, ConsolidateConfig)
    add_progress_flag(p)


def run(args) -> None:
    apply_progress_flag(args)
    from rwkvjax.train.consolidate import consolidate_checkpoint
    print(json.dumps(consolidate_checkpoint(dataclass_from_args(ConsolidateConfig, args)), indent=1))
