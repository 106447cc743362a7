"""What a long command is doing, on stderr, while it does it: a tqdm bar on a terminal; off one (a log file, a pipe,
a CI job), a line every `every_s()` seconds, the first at once.

Off a terminal the lines come from a ticker thread, not from the steps: a step that takes minutes (the first one
compiles) still gets its line on time, saying what it waits on and for how long. The ETA is the remaining work at
the rate measured since the first finished unit (the first one pays the compilation and would skew it); after only
one unit, the rate so far.

`RWKVJAX_PROGRESS_EVERY` (seconds; the CLI's `--progress-every` sets it) is how often a line is written off a
terminal; 0 writes none.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import TextIO

ENV = "RWKVJAX_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0  # a log line twice a minute: enough to see a run is alive, few enough to read the log
clock = time.monotonic  # (a module attribute: tests set the time)


def every_s() -> float:
    """Seconds between the lines written off a terminal (`RWKVJAX_PROGRESS_EVERY`; 0: none)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        from rwkvjax.errors import ConfigError
        raise ConfigError(f"{ENV}={raw!r}: expected a number of seconds >= 0 (0: no progress lines)")
    return value


def set_every_s(seconds: float) -> None:
    """Set the interval for this process and the commands it starts (the CLI's `--progress-every`)."""
    os.environ[ENV] = repr(float(seconds))


def duration(seconds: float) -> str:
    """`42s`, `3m07s`, `2h05m`: short enough for a progress line."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Reporter:
    """The progress of one long task of `total` units (None: unknown), `done` of them already done (a resumed run).

    `enabled`: None shows a bar on a terminal and lines off one; True always a bar; False nothing. `phase(text)`
    says what the task waits on now (it is shown until the next unit is done); `update(done, figures)` reports
    the units done and, optionally, figures to show beside them."""

    def __init__(self, what: str, total: float | None, done: float = 0, *, unit: str = "step",
                 enabled: bool | None = None, every: float | None = None, stream: TextIO | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.done = self.start_done = done
        self.stream = sys.stderr if stream is None else stream
        self.figures: dict = {}
        self.note: str | None = None
        self.t0 = self.t_note = clock()
        self._first: tuple[float, float] | None = None  # (time, done) at the first finished unit
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.bar = self._thread = None
        tty = _isatty(self.stream)
        if enabled is False:
            return
        if enabled or tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, file=self.stream, dynamic_ncols=True, unit=unit,
                            desc=what)
            return
        self.every = every_s() if every is None else every
        if self.every > 0:
            self._thread = threading.Thread(target=self._tick, name=f"progress-{what}", daemon=True)
            self._thread.start()

    # ----- what the task reports -----
    def set_total(self, total: float | None) -> None:
        """The work in all, once it is known (e.g. after the inputs are read)."""
        with self._lock:
            self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def phase(self, text: str | None) -> None:
        """What the task is doing now, e.g. "compiling the first step"; a new phase is written at once off a
        terminal (the first line a command writes comes with it)."""
        with self._lock:
            self.note, self.t_note = text, clock()
        if self.bar is not None:
            self.bar.set_description_str(self.what if not text else f"{self.what}: {text}")
        elif self._thread is not None and text:
            self._write(self.line())

    def update(self, done: float, figures: dict | None = None) -> None:
        now = clock()
        with self._lock:
            if self._first is None and done > self.start_done:
                self._first = (now, done)
            self.done = done
            self.note = None
            if figures is not None:
                self.figures = dict(figures)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if figures is not None:
                self.bar.set_postfix(**figures, refresh=False)
            self.bar.set_description_str(self.what, refresh=False)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.bar is not None:
            self.bar.close()

    # ----- the figures -----
    def eta_s(self) -> float | None:
        """Seconds left at the measured rate (None: unknown total, or nothing done yet)."""
        with self._lock:
            if self.total is None or self._first is None:
                return None
            now, left = clock(), self.total - self.done
            t1, d1 = self._first
            if self.done > d1 and now > t1:
                rate = (self.done - d1) / (now - t1)
            else:  # one unit done: the rate so far, compilation included (an overestimate)
                rate = (d1 - self.start_done) / max(t1 - self.t0, 1e-9)
        return max(left, 0) / rate if rate > 0 else None

    def line(self) -> str:
        """One progress line, e.g. `pretrain: step 12/100 (12%), 0.41 s/step, ETA 36s, elapsed 9s | loss=3.2`."""
        now = clock()
        with self._lock:
            done, note, t_note, figures, first = self.done, self.note, self.t_note, dict(self.figures), self._first
        count = f"{_num(done)}/{_num(self.total)}" if self.total is not None else _num(done)
        parts = [f"{self.unit} {count}" + (f" ({100 * done / self.total:.0f}%)" if self.total else "")]
        if first is not None and done > first[1]:
            per = (now - first[0]) / (done - first[1])
            parts.append(f"{per:.3g} s/{self.unit}" if per >= 1 else f"{1 / max(per, 1e-9):.3g} {self.unit}/s")
        eta = self.eta_s()
        if eta is not None:  # "~": measured over the first unit alone, compilation included
            rough = first is not None and done <= first[1]
            parts.append(f"ETA {'~' if rough else ''}{duration(eta)}")
        parts.append(f"elapsed {duration(now - self.t0)}")
        text = f"{self.what}: " + ", ".join(parts)
        if note:
            text += f"; {note}… ({duration(now - t_note)})"
        if figures:
            text += " | " + " ".join(f"{k}={v}" for k, v in figures.items())
        return text

    def _tick(self) -> None:
        while not self._closed.wait(self.every):
            self._write(self.line())

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stderr: the task goes on without its lines
            pass


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
