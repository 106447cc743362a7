"""Whole-or-nothing file writes: a crash or a kill leaves the previous version of the file, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *,
                 private: bool = True) -> None:
    """Write `data` (bytes, or a function that writes to the file it is given) into a temporary file next to
    `path`, fsync it, rename it over `path` and fsync the folder. Owner-only (0600) when `private`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if private:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
        else:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)  # what a plain open() would give
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # an interrupt mid-write leaves no half file behind
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)
