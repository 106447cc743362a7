"""rwkvjax command line: a lazy table of commands, one module each, flags generated from run configs.

`python cli.py -h` imports no command module; `python cli.py CMD -h` imports only CMD's module, whose
top level imports only its (stdlib-only) config dataclass. jax and orbax load when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from ingest.errors import InputError
from rwkvjax.errors import Terminated, UserError

# name -> (module, one-line help)
COMMANDS = {
    "train": ("rwkvjax.cli.train", "state-tune a frozen model on Claude Code sessions (resumes from --ckpt-dir)"),
    "inspect": ("rwkvjax.cli.inspect", "what a training checkpoint learned"),
    "merge-stats": ("rwkvjax.cli.merge_stats", "dynamic-merge statistics of a training checkpoint"),
    "traces": ("rwkvjax.cli.traces", "show what training would see from Claude Code sessions (after redaction)"),
    "generate": ("rwkvjax.cli.generate", "stream sampled text from a model (optionally with a tuned state)"),
    "score": ("rwkvjax.cli.score", "bits per byte of text files under a model (optionally with a tuned state)"),
    "eval": ("rwkvjax.cli.eval", "prequential evaluation of state-tuning arms on a folder of sessions"),
    "hypernet": ("rwkvjax.cli.hypernet", "train the merge hypernetwork offline on sessions and measure it on "
                                         "held-out ones"),
    "serve": ("rwkvjax.cli.serve", "OpenAI-compatible HTTP server (completions, chat, streaming) with named states"),
    "dashboard": ("rwkvjax.cli.dashboard", "live page of a training run: loss, bits/byte, canaries, gate decisions, "
                                           "replay, merges, speed, named states"),
    "state": ("rwkvjax.cli.state", "named tuned states: list, show, fork, rm, export/import RWKV-PEFT time_state"),
    "consolidate": ("rwkvjax.cli.consolidate", "fold a per-project run's states into its global state (sleep "
                                               "consolidation), promoted only if no project gets worse"),
    "pretrain": ("rwkvjax.cli.pretrain", "train all weights of an RWKV-7 from scratch on text files (resumable)"),
    "convert": ("rwkvjax.cli.convert", "convert a checkpoint (HF repo/folder, .safetensors, .pth, rwkv.cpp .bin) "
                                       "to one safetensors file"),
}


def _chosen(argv: list[str]) -> str | None:
    """The command named on the line (the first word that is not an option), if it is one of ours."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description="rwkvjax: RWKV-7 that keeps learning from your "
                                     "Claude Code sessions. `python cli.py COMMAND -h` lists every setting.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (`rwkvjax.errors.UserError`, `ingest.errors.InputError`) print one line
    and return 2; Ctrl-C returns 130 and SIGTERM 143, after the command saved what it had (SIGTERM is raised
    as `Terminated`, a `KeyboardInterrupt`, so both take the same path); anything else is a bug and keeps its
    traceback. A command's `run` may return its own exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if threading.current_thread() is threading.main_thread():  # (tests call main from other threads)
        signal.signal(signal.SIGTERM, _raise_terminated)
    # orbax reports through absl at WARNING what the commands already say in one line (a damaged step)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        args = build_parser(argv).parse_args(argv)
        status = importlib.import_module(COMMANDS[args.command][0]).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:  # `cli.py inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush stays quiet
        return 141
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(status or 0)

