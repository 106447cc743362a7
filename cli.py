"""rwkvjax command line. Run `python cli.py -h`."""

import atexit
import logging
import os
import sys


def _exit(status: int) -> None:
    """Leave without the interpreter's teardown: after an interrupt landed inside a JAX computation, XLA's
    native teardown can crash (SIGSEGV) once Python has finished. Everything a command writes is closed by
    then; exit handlers and buffered output are run and flushed here first."""
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
    except KeyboardInterrupt:  # Ctrl-C while the command table loads: one line, not a traceback
        print("interrupted", file=sys.stderr)
        _exit(130)
    _exit(main())
