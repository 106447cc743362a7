"""rwkvjax command line. Run `python cli.py -h`."""

import signal
import sys

_early = []  # a signal that arrived while the command table loaded, before `rwkvjax.cli.main` took over


def _early_signal(signum, frame):
    _early.append(signum)
    raise KeyboardInterrupt


# First thing: Ctrl-C or SIGTERM during the imports below ends in one line too (SIGTERM's default action would
# end the process with no word; Ctrl-C's would print a traceback from whichever import it landed in).
signal.signal(signal.SIGINT, _early_signal)
signal.signal(signal.SIGTERM, _early_signal)


def _exit(status: int) -> None:
    """Leave without the interpreter's teardown: after an interrupt landed inside a JAX computation, XLA's
    native teardown can crash (SIGSEGV) once Python has finished. Everything a command writes is closed by
    then; exit handlers and buffered output are run and flushed here first."""
    import atexit
    import logging
    import os
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say to it
            pass
    os._exit(status)


if __name__ == "__main__":
    try:
        from rwkvjax.cli import main
    except KeyboardInterrupt:  # a signal while the command table loads: one line, not a traceback
        terminated = bool(_early) and _early[-1] == signal.SIGTERM
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        _exit(143 if terminated else 130)
    _exit(main())
