"""`cli.py score`: bits per byte of text files under a model (optionally with a training run's tuned S0 and
session memory, or a session memory built from the files themselves)."""

from __future__ import annotations

import sys

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.eval.config import ScoreConfig


def add_arguments(p):
    add_dataclass_args(p, ScoreConfig)


def run(args) -> None:
    from rwkvjax.eval.scoring import score_files
    from rwkvjax.io.convert import refuse_slow_dtype
    cfg = dataclass_from_args(ScoreConfig, args)
    refuse_slow_dtype(cfg.dtype)
    for name, nbytes, bpb, model_bpb in score_files(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)):
        if nbytes == 0:
            print(f"{name}\tempty", flush=True)
            continue
        alone = "" if model_bpb is None else f"\t(model alone {model_bpb:.4f})"
        print(f"{name}\t{nbytes} bytes\t{bpb:.4f} bits/byte{alone}", flush=True)
