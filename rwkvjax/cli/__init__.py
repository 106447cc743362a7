"""rwkvjax command line: a lazy table of commands, one module each, flags generated from run configs.

`python cli.py -h` imports no command module; `python cli.py CMD -h` imports only CMD's module, whose
top level imports only its (stdlib-only) config dataclass. jax and orbax load when a command runs.
"""

from __future__ import annotations

import _thread
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


_signalled: list[int] = []


def _redeliver(signum: int, delay: float = 0.05) -> None:
    """Raise the signal's exception again a little later, from another thread (`interrupt_main`)."""
    t = threading.Timer(delay, _thread.interrupt_main, args=(signum,))
    t.daemon = True
    t.start()


def _on_signal(signum, frame):
    _signalled.append(signum)
    f = frame
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen importlib"):
            # an interrupt raised inside an import makes extension modules (numpy, jaxlib) print their own
            # traceback and fail with ImportError: wait until the import is over
            _redeliver(signum)
            return
        f = f.f_back
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _unraisable(u, default=sys.unraisablehook):
    """A Ctrl-C that landed in a garbage-collector callback (jax registers one) is printed and dropped by
    Python; deliver it again so the command still stops."""
    if isinstance(u.exc_value, KeyboardInterrupt):
        _redeliver(signal.SIGTERM if isinstance(u.exc_value, Terminated) else signal.SIGINT)
        return
    default(u)


def _stopped(signum: int) -> int:
    print("terminated" if signum == signal.SIGTERM else "interrupted", file=sys.stderr)
    return 143 if signum == signal.SIGTERM else 130


class _OrbaxSaveThreadErrors(logging.Filter):
    """Orbax logs a failed save from each of its background threads (a traceback each) before the save
    raises; `TrainCheckpointer.save_items` reports the failure once (`SaveFailed`), so those copies are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (record.levelno >= logging.ERROR and ("operation_id=" in msg or "background save thread" in msg
                                                         or "Save Finalize" in msg))


_prev_excepthook = sys.excepthook


def _late_writer_hook(kind, value, tb):
    """When a save fails, orbax's tensorstore writers go on finishing in their own threads and each reports,
    through `sys.excepthook`, that the event loop it would call back is gone: a traceback each around the
    one-line error. Those reports (and only those) are dropped."""
    if kind is RuntimeError and str(value) == "Event loop is closed":
        return
    _prev_excepthook(kind, value, tb)


def quiet_orbax_reports() -> None:
    """What the commands say in one line (a damaged step, a failed save), orbax would also print at length.
    Process-wide settings, so the CLI makes them (once), not the checkpoint module a library user imports."""
    absl = logging.getLogger("absl")
    absl.setLevel(logging.ERROR)  # orbax reports through absl at WARNING what the commands already say
    if not any(isinstance(f, _OrbaxSaveThreadErrors) for f in absl.filters):
        absl.addFilter(_OrbaxSaveThreadErrors())
    global _prev_excepthook
    if sys.excepthook is not _late_writer_hook:
        _prev_excepthook = sys.excepthook
        sys.excepthook = _late_writer_hook


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (`rwkvjax.errors.UserError`, `ingest.errors.InputError`) print one line
    and return 2; Ctrl-C returns 130 and SIGTERM 143, after the command saved what it had (SIGTERM is raised
    as `Terminated`, a `KeyboardInterrupt`, so both take the same path; whatever error a signal causes while
    a module loads counts as the interrupt); anything else is a bug and keeps its traceback. A command's
    `run` may return its own exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if threading.current_thread() is threading.main_thread():  # (tests call main from other threads)
        _signalled.clear()
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _on_signal)
        sys.unraisablehook = _unraisable
    quiet_orbax_reports()
    try:
        args = build_parser(argv).parse_args(argv)
        status = importlib.import_module(COMMANDS[args.command][0]).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:  # `cli.py inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush stays quiet
        return 141
    except Terminated:
        return _stopped(signal.SIGTERM)
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except (UserError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        if _signalled:  # e.g. an extension module whose import the interrupt cut short (an ImportError)
            return _stopped(_signalled[0])
        raise
    return int(status or 0)
