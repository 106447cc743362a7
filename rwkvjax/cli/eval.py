"""`cli.py eval`: prequential evaluation of the state-tuning arms, written as a report folder."""

from __future__ import annotations

import shlex
import sys

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.eval.config import EvalConfig


def add_arguments(p):
    add_dataclass_args(p, EvalConfig)


def run(args) -> None:
    from rwkvjax.eval.prequential import run_eval
    from rwkvjax.eval.report import write_eval_report
    from rwkvjax.io.formats import load
    cfg = dataclass_from_args(EvalConfig, args)
    res = run_eval(cfg, load(cfg.model), log=lambda m: print(m, file=sys.stderr, flush=True))
    cmd = "python cli.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    print(write_eval_report(res, cfg.out, cmd))
