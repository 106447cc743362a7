"""`cli.py hypernet`: train the merge hypernetwork offline, then measure it on held-out sessions."""

from __future__ import annotations

import json
import logging

from rwkvjax.cli.flags import add_dataclass_args, add_progress_flag, apply_progress_flag, dataclass_from_args
from rwkvjax.train.config import HyperTrainConfig


def add_arguments(p):
    add_dataclass_args(p, HyperTrainConfig)
    add_progress_flag(p)


def run(args) -> None:
    apply_progress_flag(args)
    from rwkvjax.eval.hypernet import run_hyper_train
    from rwkvjax.io.formats import load
    # the run's lines (what it trains on, the curve, an interrupt) go to stderr as log records; the result to stdout
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("rwkvjax").setLevel(logging.INFO)
    cfg = dataclass_from_args(HyperTrainConfig, args)
    res = run_hyper_train(cfg, load(cfg.model))
    print(json.dumps(res, indent=1, ensure_ascii=False))
