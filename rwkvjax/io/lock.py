"""One writer per run folder: an exclusive OS file lock held for the life of a run.

`fcntl.flock` on `<folder>/.lock`: the kernel drops the lock when its holder exits in any way (SIGKILL
included), so a lock left by a killed process is simply taken by the next run; nothing stale to clean up.
The holder writes its pid, host and start time into the file so a refused run can say who holds it.
Readers (`inspect`, `--checkpoint` users) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rwkvjax.errors import UserError

LOCK_NAME = ".lock"


class RunLocked(UserError, RuntimeError):
    """Another process is writing to this run folder."""


class RunLock:
    """`with RunLock(folder, "train"):` — creates the folder if needed, raises `RunLocked` if it is taken."""

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder, self.command = Path(folder).absolute(), command
        self._file = None  # a file object, so a lock whose owner is garbage-collected is released too

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f.read(4096))
            f.close()
            raise RunLocked(f"{self.folder} is in use by {holder}; stop that run first or use another folder") \
                from None
        f.truncate(0)
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                            "started": time.time()}).encode())
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(raw: bytes) -> str:
    try:
        info = json.loads(raw or b"{}")
    except ValueError:  # the holder is between taking the lock and writing its name
        info = {}
    if not info.get("pid"):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"`{info.get('command', 'a run')}` (pid {info['pid']} on {info.get('host', '?')}, started {started})"
