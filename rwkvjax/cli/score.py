"""`cli.py score`: bits per byte of text files under a model (optionally with a training run's tuned S0)."""

from __future__ import annotations

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.eval.config import ScoreConfig


def add_arguments(p):
    add_dataclass_args(p, ScoreConfig)


def run(args) -> None:
    from rwkvjax.eval.scoring import score_files
    from rwkvjax.io.convert import refuse_slow_dtype
    cfg = dataclass_from_args(ScoreConfig, args)
    refuse_slow_dtype(cfg.dtype)
    for name, nbytes, bpb in score_files(cfg):
        print(f"{name}\tempty" if nbytes == 0 else f"{name}\t{nbytes} bytes\t{bpb:.4f} bits/byte", flush=True)
