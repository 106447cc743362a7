"""`cli.py eval`: prequential evaluation of the state-tuning arms, written as a report folder.

Each finished session is kept in `<out>/progress/`; Ctrl-C or SIGTERM writes the report of the sessions
finished so far and exits 130 / 143, and the same command continues the run.
"""

from __future__ import annotations

import shlex
import sys

from rwkvjax.cli.flags import add_dataclass_args, add_progress_flag, apply_progress_flag, dataclass_from_args
from rwkvjax.eval.config import EvalConfig


def add_arguments(p):
    add_dataclass_args(p, EvalConfig)
    add_progress_flag(p)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> None:
    apply_progress_flag(args)
    from rwkvjax.extras import require
    cfg = dataclass_from_args(EvalConfig, args)
    require("matplotlib", "plot", "eval's report (prequential.png)")  # before minutes of work, not after
    from rwkvjax.eval.prequential import run_eval, saved_results
    from rwkvjax.eval.report import write_eval_report
    from rwkvjax.io.formats import load
    cmd = "python cli.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    try:
        res = run_eval(cfg, load(cfg.model), log=_say, progress=None)
    except KeyboardInterrupt:
        _partial_report(cfg, cmd, saved_results, write_eval_report)
        raise
    print(write_eval_report(res, cfg.out, cmd))


def _partial_report(cfg: EvalConfig, cmd: str, saved_results, write_eval_report) -> None:
    """On an interrupt: the report of the sessions already on disk (a few seconds); a second interrupt skips it."""
    try:
        res = saved_results(cfg, interrupted=True)
        if res is None:
            _say("eval: no session had finished; run the same command to start again")
            return
        p = res["progress"]
        path = write_eval_report(res, cfg.out, cmd)
        _say(f"eval: {p['scored']} of {p['total']} sessions finished and kept in {cfg.out}/progress; report of "
             f"them in {path}; run the same command to continue")
    except KeyboardInterrupt:
        _say(f"eval: report skipped; the finished sessions are kept in {cfg.out}/progress")
    except Exception as e:  # the interrupt is what the user asked for: it goes on; the report is best effort
        _say(f"eval: could not write the report of the finished sessions ({e!r})")
