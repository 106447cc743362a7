"""Whole-or-nothing file writes: a crash or a kill leaves the previous version of the file, never half of one.

Every file the package writes in place of an older one goes through here (a temporary file beside it, fsynced,
renamed over it, then the folder fsynced): without the fsyncs, a power cut after the rename can leave an empty
or partial file under the final name on common filesystems (ext4 delayed allocation)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from rwkvjax.errors import CannotWrite, DiskFull

# What a write the user can fix fails with: no room (a full disk, a quota, a file-size limit), or no right to write.
# Anything else (EIO, a bug in a writer) keeps its own exception and traceback.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_RIGHT = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # safetensors' save_file reports an OS error in its message only


def _mode(private: bool) -> int:
    """Owner-only (0600) when `private`, else what a plain open() would give (0666 less the umask)."""
    return 0o600 if private else 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask. Read from /proc where there is one: setting it to read it (the only portable way)
    leaves a moment in which another thread's new files get the temporary mask, and two threads doing it at
    once can leave the process with the wrong one for good."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(path: Path) -> Path:
    """A temporary name beside `path` that no other writer uses: two processes writing one file at once must not
    rename (or remove) each other's half-written temporary."""
    return path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    # the one temporary name older versions used, left by a kill mid-write: nobody writes under it any more
    path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)


def _create(tmp: Path, private: bool) -> int:
    """Open `tmp` empty for writing, with the final file's mode."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, _mode(private))  # O_CREAT's mode does not apply to a leftover temporary file
    return fd


def _reported(e: BaseException, path: Path) -> BaseException:
    """`e` as the one-line error the CLI prints when the user can fix it (`DiskFull`, `CannotWrite`, naming `path`
    and what to do), else `e` itself."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (m := _RUST_OS_ERROR.search(str(e))):
        code = int(m.group(1))
    if code in _NO_ROOM:
        try:
            free = f"{shutil.disk_usage(path.parent).free:,} bytes free there"
        except OSError:
            free = "free space unknown"
        err = DiskFull(f"{path}: not written ({os.strerror(code)}; {free}); the previous file, if any, is unchanged: "
                       "free some space (or raise the limit) and run the command again, or write it elsewhere")
    elif code in _NO_RIGHT:
        err = CannotWrite(f"{path}: not written ({os.strerror(code)}); choose a folder you can write to")
    else:
        return e
    err.errno, err.strerror, err.filename = code, os.strerror(code), str(path)
    return err


def ensure_folder(folder: str | os.PathLike) -> Path:
    """`folder` and its parents, created where missing, for a writer's output; a full disk or a folder the user
    cannot write to is the same one-line error as a failed write."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reported = _reported(e, folder)
        if reported is e:
            raise
        raise reported from e
    return folder


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
    tmp = _temporary(path)
    try:
        os.close(_create(tmp, private))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # writers that take a name close the file unsynced
        try:
            # and some put a file of their own in its place (safetensors' save_file: a new file, 0600 whatever the
            # umask), so the mode is set again on what will be renamed
            os.fchmod(fd, _mode(private))
            os.fsync(fd)
        finally:
            os.close(fd)
        _replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # an interrupt mid-write leaves no half file behind
        reported = _reported(e, path)
        if reported is e:
            raise
        raise reported from e
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *,
                 private: bool = True) -> None:
    """Write `data` (bytes, or a function that writes to the file it is given) into a temporary file next to
    `path`, fsync it, rename it over `path` and fsync the folder. Owner-only (0600) when `private`."""
    with atomic_path(path, private=private) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY), "wb") as f:
        if isinstance(data, (bytes, bytearray)):
            f.write(data)
        else:
            data(f)
