"""Whole-or-nothing file writes: a crash or a kill leaves the previous version of the file, never half of one.

Every file the package writes in place of an older one goes through here (a temporary file beside it, fsynced,
renamed over it, then the folder fsynced): without the fsyncs, a power cut after the rename can leave an empty
or partial file under the final name on common filesystems (ext4 delayed allocation)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def _create(tmp: Path, private: bool) -> int:
    """Open `tmp` empty for writing, owner-only (0600) when `private`, else what a plain open() would give."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if private:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
    else:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
    return fd


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, private: bool = True) -> Iterator[Path]:
    """A temporary file name next to `path`, for writers that want a name rather than a file object
    (safetensors' `save_file`, `torch.save`): the file exists already, empty and with its final mode. When the
    block ends without an error it is fsynced and renamed over `path`, and the folder fsynced; on an error (or an
    interrupt) it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        os.close(_create(tmp, private))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # writers that take a name close the file unsynced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # an interrupt mid-write leaves no half file behind
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *,
                 private: bool = True) -> None:
    """Write `data` (bytes, or a function that writes to the file it is given) into a temporary file next to
    `path`, fsync it, rename it over `path` and fsync the folder. Owner-only (0600) when `private`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with os.fdopen(_create(tmp, private), "wb") as f:
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
    _fsync_dir(path.parent)
