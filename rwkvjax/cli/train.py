"""`cli.py train`: build a TrainConfig from the flags, run the trainer, print its summary as JSON."""

from __future__ import annotations

import dataclasses
import json
import sys

from rwkvjax.cli.flags import add_dataclass_args, add_progress_flag, apply_progress_flag, dataclass_from_args
from rwkvjax.train.config import TrainConfig


def add_arguments(p):
    add_dataclass_args(p, TrainConfig)
    add_progress_flag(p)


# exit status of a run stopped by a signal (after it saved): the shell's 128 + signal number
SIGNAL_STATUS = {"SIGINT": 130, "SIGTERM": 143}


def run(args) -> int:
    apply_progress_flag(args)
    from rwkvjax.train.run import Trainer, demo_setup
    cfg = dataclass_from_args(TrainConfig, args)
    if cfg.tensorboard:  # before the model loads, not after
        from rwkvjax.extras import require
        require("tensorboardX", "tensorboard", "--tensorboard")
    model = None
    if cfg.demo:
        demo_cfg, model = demo_setup(cfg.ckpt_dir or "runs/demo")
        ignored = [f.name for f in dataclasses.fields(TrainConfig)
                   if f.name not in ("demo", "ckpt_dir") and getattr(cfg, f.name) != f.default]
        if ignored:
            print("--demo uses its own settings; ignoring " + ", ".join("--" + n.replace("_", "-") for n in ignored),
                  file=sys.stderr)
        cfg = demo_cfg
    out = Trainer(cfg, model=model).run()
    from rwkvjax.train.summary import finished_line, format_summary
    # people read stderr, scripts parse the JSON line on stdout
    if out.get("already_finished"):
        print(finished_line(out, cfg, demo=args.demo), file=sys.stderr)
    else:
        print(format_summary(out, cfg), file=sys.stderr)
    print(json.dumps(out))
    return SIGNAL_STATUS.get(out.get("signal"), 0)
