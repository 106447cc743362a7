"""`rwkvjax.atomic`: the file is fsynced before the rename and the folder after it, an error or an interrupt leaves
the previous file whole and no temporary file, modes are owner-only when private; the package's writers use it."""

from __future__ import annotations

import importlib.util
import os
import stat

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rwkvjax import atomic
from rwkvjax.atomic import atomic_path, atomic_write


@pytest.fixture
def syscalls(monkeypatch):
    """Every fsync (of a regular file or a folder, with its inode) and replace, in order."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        calls.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


def _write_bytes(path, payload):
    atomic_write(path, payload)


def _write_callable(path, payload):
    atomic_write(path, lambda f: f.write(payload))


def _write_by_name(path, payload):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # closed without a fsync, as save_file and torch.save do
            f.write(payload)


WRITERS = [_write_bytes, _write_callable, _write_by_name]


@pytest.mark.parametrize("write", WRITERS)
def test_file_fsynced_then_renamed_then_folder_fsynced(write, tmp_path, syscalls):
    path = tmp_path / "f.bin"
    write(path, b"payload")
    assert path.read_bytes() == b"payload"
    ino, folder = path.stat().st_ino, tmp_path.stat().st_ino
    assert syscalls == [("fsync", "file", ino), ("replace", ino), ("fsync", "dir", folder)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
@pytest.mark.parametrize("write", WRITERS)
def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(write, error, tmp_path, syscalls):
    path = tmp_path / "f.bin"
    write(path, b"old")

    def broken(f_or_name):
        if isinstance(f_or_name, (str, os.PathLike)):
            with open(f_or_name, "wb") as f:
                f.write(b"new, half")
        else:
            f_or_name.write(b"new, half")
        raise error("stopped")

    with pytest.raises(error):
        if write is _write_by_name:
            with atomic_path(path) as tmp:
                broken(tmp)
        else:
            atomic_write(path, broken)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert [c[0] for c in syscalls].count("replace") == 1  # only the first write's


@pytest.mark.parametrize("write", WRITERS)
def test_private_is_0600_even_over_a_leftover_temporary_and_public_follows_the_umask(write, tmp_path):
    path = tmp_path / "f.bin"
    leftover = tmp_path / ".f.bin.tmp"  # a kill between create and rename, by an older version
    leftover.write_bytes(b"stale")
    leftover.chmod(0o644)
    write(path, b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not leftover.exists()
    mask = os.umask(0o027)
    try:
        atomic_write(path, b"y", private=False)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        with atomic_path(path, private=False) as tmp:
            tmp.write_bytes(b"z")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() == b"z"
    finally:
        os.umask(mask)


def test_atomic_path_takes_a_writer_that_wants_a_name(tmp_path):
    path = tmp_path / "t.safetensors"
    with atomic_path(path, private=False) as tmp:
        assert tmp.parent == tmp_path and tmp.exists() and not path.exists()
        save_file({"a": np.arange(3, dtype=np.float32)}, str(tmp))
    np.testing.assert_array_equal(load_file(str(path))["a"], np.arange(3, dtype=np.float32))


def test_the_package_writers_go_through_it(tmp_path, syscalls):
    """What used to rename a temporary file without a fsync: each now fsyncs its file and folder."""
    from rwkvjax.io.states import StateStore
    from rwkvjax.io.time_state import write_time_state
    one = [("fsync", "file"), ("replace",), ("fsync", "dir")]
    kinds = lambda: [c[:2] if c[0] == "fsync" else c[:1] for c in syscalls]
    wkv = np.zeros((2, 1, 4, 4), np.float32)
    suffixes = (".safetensors", ".pth") if importlib.util.find_spec("torch") else (".safetensors",)
    for suffix in suffixes:
        syscalls.clear()
        write_time_state(tmp_path / f"ts{suffix}", wkv)
        assert kinds() == one, suffix
    syscalls.clear()
    store = StateStore(tmp_path / "states")
    rec = store.put("proj", wkv, base_hash="h", tokenizer="t")
    assert kinds() == one * 2  # the tensors, then the record
    assert (tmp_path / "states" / f"{rec.id}.json").is_file()
    assert not list((tmp_path / "states").glob(".*.tmp"))
