"""Stop a long loop at a step boundary on Ctrl-C or SIGTERM, so it can save exactly what it has.

Raising from a signal handler (the CLI's default) can land between a step's update and its bookkeeping;
inside `StopSignals` the signals only set `event`, the loop ends after the step in flight, saves, and
`raise_if_stopped` then raises what the CLI turns into exit 130 (Ctrl-C) or 143 (SIGTERM).
"""

from __future__ import annotations

import signal
import threading

from rwkvjax.errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self, event: threading.Event | None = None):
        self.event = event if event is not None else threading.Event()
        self.got: int | None = None
        self._prev: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.got is None:
            self.got = signum
        self.event.set()

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from there
            self._prev = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._prev.items():
            signal.signal(s, h)
        self._prev = {}

    @property
    def name(self) -> str | None:
        """SIGINT or SIGTERM once one arrived."""
        return None if self.got is None else signal.Signals(self.got).name

    def raise_if_stopped(self) -> None:
        if self.got == signal.SIGTERM:
            raise Terminated()
        if self.got is not None:
            raise KeyboardInterrupt()
