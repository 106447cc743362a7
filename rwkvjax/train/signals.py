"""Stop a long loop at a step boundary on Ctrl-C or SIGTERM, so it can save exactly what it has.

Raising from a signal handler (the CLI's default) can land between a step's update and its bookkeeping;
inside `StopSignals` the first signal only sets `event` and says so on stderr at once ("stopping after step N…"),
the loop ends after the step in flight, saves, and `raise_if_stopped` then raises what the CLI turns into exit
130 (Ctrl-C) or 143 (SIGTERM). A second signal ends the process at once with that status: nothing more is
written, and the newest step saved before it is what a rerun resumes (checkpoint steps are written atomically).

The loop reports where it is (`note_step`) and the checkpoint hooks what they saved (`note_saved`), so the
acknowledgement can name both; they reach the `StopSignals` whose `event` the loop was given, so a loop nested
in another (a consolidation inside a training run, with its own event) leaves the outer one's figures alone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from rwkvjax.errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_KEY = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    active: "StopSignals | None" = None  # the one whose handlers are installed now

    def __init__(self, event: threading.Event | None = None, *, exit_on_second: bool = True):
        self.event = event if event is not None else threading.Event()
        self.got: int | None = None
        self.exit_on_second = exit_on_second
        self.step: int | None = None   # the step in flight, or the last one finished between steps
        self.saved: int | None = None  # the newest step saved whole (None: none yet)
        self._prev: dict = {}
        self._outer: StopSignals | None = None

    def _handle(self, signum, frame) -> None:
        if self.got is not None and self.exit_on_second:
            self._stop_now(signum)
        if self.got is None:
            self.got = signum
        self.event.set()
        key = _KEY.get(signum, signal.Signals(signum).name)
        where = f"after step {self.step}" if self.step is not None else "at the next step boundary"
        keep = f"keeping step {self.saved}" if self.saved is not None else "nothing is saved yet"
        _say(f"stopping {where}… ({key} again to stop now, {keep})")

    def _stop_now(self, signum: int) -> None:
        """The second signal: leave now. The process may be inside a save; checkpoint steps are written under a
        temporary name and renamed, so the newest whole step stays the one to resume."""
        keep = f"step {self.saved} is the newest saved" if self.saved is not None else "nothing was saved"
        _say(f"stopped now; {keep}")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a write the signal interrupted holds the stream's lock: skip its buffer
                pass
        os._exit(128 + signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from there
            self._prev = {s: signal.signal(s, self._handle) for s in SIGNALS}
            self._outer, StopSignals.active = StopSignals.active, self
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._prev.items():
            signal.signal(s, h)
        if self._prev:
            StopSignals.active = self._outer
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


def _mine(event: threading.Event) -> StopSignals | None:
    s = StopSignals.active
    return s if s is not None and s.event is event else None


def note_step(event: threading.Event, step: int) -> None:
    """The loop stopped by `event` is at `step` (in flight, or the last finished between steps)."""
    s = _mine(event)
    if s is not None:
        s.step = step


def note_saved(step: int) -> None:
    """A checkpoint hook saved `step` whole (of the loop running under the active `StopSignals`)."""
    s = StopSignals.active
    if s is not None and step > 0:  # (step 0 is the start: nothing to keep)
        s.saved = step if s.saved is None else max(s.saved, step)


def _say(text: str) -> None:
    """One line on stderr from a signal handler: a raw write, since the handler may have interrupted a buffered
    write to the same stream (a second one would raise); on a terminal after a newline, below a progress bar."""
    try:
        lead = "\n" if sys.stderr.isatty() else ""
    except (AttributeError, ValueError):
        lead = ""
    try:
        os.write(2, (lead + text + "\n").encode())
    except OSError:
        pass
