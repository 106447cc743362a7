"""`rwkvjax.atomic`: the file is fsynced before the rename and the folder after it, an error or an interrupt leaves
the previous file whole and no temporary file, modes are owner-only when private; the package's writers use it."""

from __future__ import annotations

import errno
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


# ----- issue 25 item 10: a full disk is one line and leaves nothing; shareable outputs follow the umask -----

def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file object on a full disk: every write fails."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        _enospc()

    def __getattr__(self, name):
        return getattr(self.f, name)


def _safetensors_full(tensors, filename, metadata=None):
    """What safetensors' save_file raises on a full disk: its own error class, the OS error in the message only."""
    from safetensors import SafetensorError
    with open(filename, "wb") as f:
        f.write(b"half a file")
    raise SafetensorError(f"Error while serializing: I/O error: No space left on device (os error 28) at path "
                          f"{filename!r}")


@pytest.mark.parametrize("where", ["writer", "fsync"])
def test_a_full_disk_is_a_one_line_error_and_leaves_no_temporary(where, tmp_path, monkeypatch):
    from rwkvjax.errors import DiskFull, UserError
    if where == "fsync":  # a delayed-allocation filesystem reports the full disk at the fsync
        monkeypatch.setattr(atomic.os, "fsync", _enospc)
    path = tmp_path / "f.bin"
    with pytest.raises(DiskFull) as caught:
        atomic_write(path, _enospc if where == "writer" else b"payload")
    with pytest.raises(DiskFull):
        with atomic_path(path) as tmp:
            if where == "writer":
                _safetensors_full({}, tmp)
            else:
                tmp.write_bytes(b"payload")
    e = caught.value
    assert isinstance(e, UserError) and isinstance(e, OSError) and e.errno == errno.ENOSPC
    assert str(path) in str(e) and "No space left on device" in str(e) and "\n" not in str(e)
    assert list(tmp_path.iterdir()) == []


def test_an_unrelated_error_keeps_its_type(tmp_path):
    def broken(f):
        raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "f.bin", broken)
    from rwkvjax.errors import UserError
    assert not isinstance(caught.value, UserError) and list(tmp_path.iterdir()) == []


def _store_with_a_state(tmp_path):
    from rwkvjax.io.states import StateStore
    store = StateStore(tmp_path / "states")
    store.put("proj", np.zeros((2, 1, 4, 4), np.float32), base_hash="h", tokenizer="t")
    return tmp_path / "states"


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("where", ["writer", "fsync"])
def test_state_export_on_a_full_disk_says_one_line_and_leaves_nothing(suffix, where, tmp_path, monkeypatch, capsys):
    from rwkvjax.cli import main
    states = _store_with_a_state(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    if suffix == ".pth":
        torch = pytest.importorskip("torch", reason=".pth needs torch (the [reference] extra)")
        if where == "writer":
            monkeypatch.setattr(torch, "save", lambda obj, f: (open(f, "wb").write(b"half"), _enospc()))
    elif where == "writer":
        import safetensors.numpy
        monkeypatch.setattr(safetensors.numpy, "save_file", _safetensors_full)
    if where == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _enospc)
    before = _files(states)
    capsys.readouterr()
    assert main(["state", "export", "proj", str(out / f"proj{suffix}"), "--states", str(states)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "No space left on device" in err, err
    assert str(out / f"proj{suffix}") in err
    assert list(out.iterdir()) == [] and _files(states) == before


@pytest.mark.parametrize("where", ["writer", "fsync", "record"])
def test_state_fork_on_a_full_disk_says_one_line_and_leaves_nothing(where, tmp_path, monkeypatch, capsys):
    from rwkvjax.cli import main
    from rwkvjax.io.states import StateStore
    states = _store_with_a_state(tmp_path)
    if where == "writer":
        import safetensors.numpy
        monkeypatch.setattr(safetensors.numpy, "save_file", _safetensors_full)
    elif where == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _enospc)
    else:  # the tensors are written (by name), the record that would point at them (through a file object) is not
        real_fdopen = os.fdopen
        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FullFile(real_fdopen(fd, mode)))
    before = _files(states)
    capsys.readouterr()
    assert main(["state", "fork", "proj", "copy", "--states", str(states)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "No space left on device" in err, err
    assert _files(states) == before
    assert [r.name for r in StateStore(states).records()] == ["proj"]


def test_convert_and_export_outputs_are_shareable_and_the_store_owner_only(tmp_path):
    """`convert` and `state export` write files meant to be shared (no session text): 0666 less the umask, even
    though safetensors' save_file creates its files 0600; the named states' store stays owner-only."""
    from rwkvjax.cli import main
    from tests.conftest import RWKVCPP_DIR
    states = _store_with_a_state(tmp_path)
    mask = os.umask(0o022)
    try:
        outs = [tmp_path / "m.safetensors", tmp_path / "s.safetensors"]
        assert main(["convert", str(RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"), str(outs[0]), "--dtype",
                     "fp32"]) in (0, None)
        assert main(["state", "export", "proj", str(outs[1]), "--states", str(states)]) in (0, None)
        if importlib.util.find_spec("torch"):
            outs.append(tmp_path / "s.pth")
            assert main(["state", "export", "proj", str(outs[2]), "--states", str(states)]) in (0, None)
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in outs} == {p.name: "0o644" for p in outs}
        os.umask(0o077)
        main(["state", "export", "proj", str(outs[1]), "--states", str(states)])
        assert stat.S_IMODE(outs[1].stat().st_mode) == 0o600  # the umask is respected
    finally:
        os.umask(mask)
    for f in (tmp_path / "states").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_folder_the_user_cannot_write_is_a_one_line_error(tmp_path):
    from rwkvjax.errors import CannotWrite, DiskFull
    path = tmp_path / "f.bin"

    def denied(f):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    with pytest.raises(CannotWrite) as caught:
        atomic_write(path, denied)
    assert not isinstance(caught.value, DiskFull) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.EACCES and str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_new_folder_on_a_full_disk_says_one_line(tmp_path, monkeypatch, capsys):
    """The output's folder is made first: a full disk fails there before any file is opened."""
    from rwkvjax.cli import main
    states = _store_with_a_state(tmp_path)
    real_mkdir = atomic.Path.mkdir
    monkeypatch.setattr(atomic.Path, "mkdir", lambda self, *a, **k: (
        _enospc() if self.name == "new" else real_mkdir(self, *a, **k)))
    capsys.readouterr()
    assert main(["state", "export", "proj", str(tmp_path / "new" / "proj.safetensors"), "--states", str(states)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(tmp_path / "new") in err, err
    assert not (tmp_path / "new").exists()



@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the umask from /proc")
def test_a_public_write_reads_the_umask_without_setting_it(tmp_path, monkeypatch):
    """Setting the umask to read it would give another thread's new files a mask of 0 for that moment."""
    old = os.umask(0o027)
    try:
        with monkeypatch.context() as mp:
            mp.setattr(os, "umask", lambda mask: pytest.fail("os.umask called"))
            atomic_write(tmp_path / "a.bin", b"x", private=False)
            with atomic_path(tmp_path / "b.bin", private=False) as tmp:
                save_file({"a": np.zeros(2, np.float32)}, str(tmp))
    finally:
        os.umask(old)
    assert [stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.bin", "b.bin")] == [0o640, 0o640]
