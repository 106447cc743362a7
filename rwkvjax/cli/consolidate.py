"""`cli.py consolidate`: sleep consolidation of a per-project run's states into its global state."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.train.config import ConsolidateConfig


def add_arguments(p):
    add_dataclass_args(p, ConsolidateConfig)


def run(args) -> None:
    from rwkvjax.train.consolidate import consolidate_checkpoint
    print(json.dumps(consolidate_checkpoint(dataclass_from_args(ConsolidateConfig, args)), indent=1))
