"""Run `cli.py` with one function of the program wrapped so that a test can signal it *inside* a phase, whatever
the machine's speed.

A test that means "a signal while the run is in phase X" used to wait for a sign that X had begun and then hope
that X lasted longer than its own reaction: on an idle machine X can end first (the run finishes, the signal
finds nothing to interrupt), on a busy one the test is late. Here the wrapped function announces itself with a
line on stdout when the run reaches it, and the run stays in that phase until a signal ends it: either the
function's real work is repeated (`mode="repeat"`: the signal lands inside real work, e.g. JAX compiling and
stepping) or, after one real call, the run waits (`mode="after"`: the signal lands between two units of work,
e.g. between two sessions). Nothing is timed; the only bound is a generous limit after which the run fails
loudly instead of hanging.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

ANNOUNCED = "harness: the phase is reached; waiting for the signal"

_HARNESS = r"""
import importlib, runpy, sys, time
module, name, prefix, mode, limit = sys.argv[1:6]
sys.argv = sys.argv[6:]
mod = importlib.import_module(module)
real = getattr(mod, name)
reached = []

def held(*args, **kwargs):
    # only the first call whose first argument starts with `prefix` (any first call when it is empty) is held
    if reached or (prefix and not (args and str(args[0]).startswith(prefix))):
        return real(*args, **kwargs)
    reached.append(1)
    if mode == "after":
        real(*args, **kwargs)
    print(ANNOUNCED, flush=True)
    deadline = time.monotonic() + float(limit)
    while time.monotonic() < deadline:
        if mode == "repeat":
            real(*args, **kwargs)
        else:
            time.sleep(0.05)  # a polling interval: the signal's handler runs between two of these
    sys.exit(f"harness: no signal came within {limit} s of {module}.{name}")

setattr(mod, name, held)
runpy.run_path(sys.argv[0], run_name="__main__")
""".replace("ANNOUNCED", repr(ANNOUNCED))


def start_held(module: str, name: str, cli_argv: list[str], *, prefix: str = "", mode: str = "after",
               limit_s: float = 300, **popen) -> subprocess.Popen:
    """Start `cli.py *cli_argv` (`cli_argv[0]` is the path of cli.py) with `module.name` held as described above;
    stdout and stderr are pipes (text). `module.name` must be looked up at call time by the program (a module
    attribute, not a name imported into another module before the harness runs)."""
    assert mode in ("after", "repeat"), mode
    return subprocess.Popen([sys.executable, "-c", _HARNESS, module, name, prefix, mode, str(limit_s), *cli_argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_announced(p: subprocess.Popen, timeout_s: float = 600) -> str:
    """Block until the held run announces its phase; returns what it wrote to stderr so far (read meanwhile, so
    a chatty run cannot fill the pipe and stall). Fails with its stderr if it ends first or takes longer than
    `timeout_s` (a bound on a hang, not a guess at a speed). Reads the file descriptors directly (select cannot
    see lines a buffered reader already holds)."""
    deadline = time.monotonic() + timeout_s
    out_fd, err_fd = p.stdout.fileno(), p.stderr.fileno()
    out, err = b"", b""
    while ANNOUNCED.encode() + b"\n" not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            p.kill()
            p.communicate(timeout=60)
            raise AssertionError(f"the run did not reach its phase within {timeout_s:.0f} s:\n"
                                 f"{err.decode(errors='replace')[-3000:]}")
        ready, _, _ = select.select([out_fd, err_fd], [], [], min(left, 1.0))
        if err_fd in ready:
            err += os.read(err_fd, 65536)
        if out_fd in ready:
            chunk = os.read(out_fd, 65536)
            if not chunk:
                _, rest = p.communicate(timeout=60)
                raise AssertionError(f"the run ended (status {p.returncode}) before its phase:\n"
                                     f"{(err.decode(errors='replace') + rest)[-3000:]}")
            out += chunk
    return err.decode(errors="replace")
