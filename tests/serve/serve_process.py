"""`cli.py serve` as a real process on 127.0.0.1 (a small never-ending model), its stdout and stderr read line by line
as they come, for the tests of what the server says and how it stops. Waits are on lines, never on the clock."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from rwkvjax.io.convert import save_official
from tests.conftest import REPO

START_S = 600  # model load and compilation on a busy 2-core machine


def never_ending_model_file(small_model, folder: Path) -> Path:
    """The small model with end-of-text (id 0) scoring 0 while the best of 255 random logits is above it, so a greedy
    reply runs to its max_tokens (the cut at shutdown is then the only way it ends early)."""
    params = small_model.params
    params = dataclasses.replace(params, head=params.head.at[:, 0].set(0.0))
    path = folder / "never-ends.safetensors"
    save_official(params, small_model.arch, path, dtype="fp32")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`cli.py serve --model FILE --port P ARGS`; `lines` holds (monotonic time, "out"/"err", text) as they arrive."""

    def __init__(self, model_file: Path, cache: Path, *args: str):
        self.port, self.cache = free_port(), cache
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, str(REPO / "cli.py"), "serve", "--model", str(model_file), "--port", str(self.port),
                "--max-batch", "4", "--prefill-chunk", "8", *args]
        # the compile-time record goes to a folder of the test's own, not the user's cache
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(cache))
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str, str]] = []
        self._changed = threading.Condition()
        self._open = 2
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for text in stream:
            with self._changed:
                self.lines.append((time.monotonic(), name, text.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def text(self, name: str | None = None) -> str:
        with self._changed:
            return "\n".join(t for _, n, t in self.lines if name is None or n == name)

    def wait_line(self, pattern: str, timeout: float, name: str | None = None) -> tuple[float, str]:
        """(arrival time, text) of the first line matching `pattern` (a regular expression); fails on a timeout or
        when the process closed its output without one."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for t, n, text in self.lines:
                    if (name is None or n == name) and rx.search(text):
                        return t, text
                left = deadline - time.monotonic()
                assert left > 0 and self._open, (f"no line matching {pattern!r} (exit {self.proc.poll()}):\n"
                                                 + self.text()[-4000:])
                self._changed.wait(left)

    def serving(self) -> float:
        """Waits for the "serving ... on" line; its arrival time."""
        return self.wait_line(r"^serving .* on http://", START_S, "out")[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
