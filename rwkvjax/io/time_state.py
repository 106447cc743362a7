"""RWKV-PEFT `time_state` files: `blocks.{i}.att.time_state`, [H, N, N] per layer in the official
[value, key] orientation (https://github.com/JL-er/RWKV-PEFT), as `.pth` (torch) or `.safetensors`.

Reading also accepts a model file with the states merged in (any extra tensors are ignored there) and
refuses anything that is not a complete, finite set of layers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_path, ensure_folder
from rwkvjax.errors import CheckpointError, ConfigError, MissingFile



def write_time_state(path: str | os.PathLike, wkv_LHNN: np.ndarray, dtype: str = "fp32") -> str:
    """Write S0 [L,H,N,N] as RWKV-PEFT tensors; the format follows the suffix. Atomic."""
    path = Path(path)
    if dtype not in ("fp32", "bf16"):
        raise ConfigError(f"--dtype {dtype!r}: a time_state file is fp32 or bf16")
    wkv = np.asarray(wkv_LHNN, np.float32)
    ensure_folder(path.parent)
    if path.suffix == ".safetensors":
        import ml_dtypes
        from safetensors.numpy import save_file
        cast = (lambda a: a.astype(ml_dtypes.bfloat16)) if dtype == "bf16" else (lambda a: a)
        write = lambda tmp: save_file({f"blocks.{i}.att.time_state": np.ascontiguousarray(cast(wkv[i]))
                                       for i in range(len(wkv))}, str(tmp), metadata={"format": "rwkv-peft-time_state"})
    elif path.suffix == ".pth":
        try:
            import torch
        except ImportError:
            raise ConfigError(f"{path}: writing a .pth needs torch (`pip install -e '.[reference]'`); or write "
                              ".safetensors") from None
        tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        write = lambda tmp: torch.save({f"blocks.{i}.att.time_state": torch.from_numpy(wkv[i].copy()).to(tdtype)
                                        for i in range(len(wkv))}, str(tmp))
    else:
        raise ConfigError(f"{path}: a time_state file ends in .pth or .safetensors")
    with atomic_path(path, private=False) as tmp:
        write(tmp)
    return str(path)


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the dtypes a state may be stored in


def _no_state(path) -> CheckpointError:
    return CheckpointError(f"{path}: no 'blocks.{{i}}.att.time_state' tensors (not an RWKV-PEFT state file)")


def _safetensors_time_state(path: Path, expect_LHNN) -> np.ndarray:
    """From the header alone (names, shapes, dtypes) the layers are checked; only then are the time_state
    tensors read, and nothing else in the file (a model file with merged states holds all the weights too)."""
    from safetensors import SafetensorError, safe_open

    from rwkvjax.io.formats import check_time_state_layers, time_state_layer
    try:
        with safe_open(str(path), framework="numpy") as f:
            names = {i: k for k in f.keys() if (i := time_state_layer(k)) is not None}
            if not names:
                raise _no_state(path)
            slices = {i: f.get_slice(k) for i, k in names.items()}
            bad = next((names[i] for i, s in slices.items() if s.get_dtype() not in _FLOAT_DTYPES), None)
            if bad is not None:
                raise CheckpointError(f"{path}: tensor '{bad}' is {slices[time_state_layer(bad)].get_dtype()}; "
                                      f"a time_state is one of {', '.join(_FLOAT_DTYPES)}")
            LHNN = check_time_state_layers({i: tuple(s.get_shape()) for i, s in slices.items()}, path, expect_LHNN)
            wkv = np.empty(LHNN, np.float32)
            for i in range(LHNN[0]):
                wkv[i] = np.asarray(f.get_tensor(names[i]), np.float32)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None
    return wkv


def _pth_time_state(path: Path, expect_LHNN) -> np.ndarray:
    """A .pth opened memory-mapped: names and shapes are checked before any tensor is converted."""
    from rwkvjax.io.formats import check_time_state_layers, time_state_layer
    try:
        import torch
    except ImportError:
        return _other_time_state(path, expect_LHNN)  # read_pth says what to install
    import pickle
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        return _other_time_state(path, expect_LHNN)  # read_pth refuses it in its own words
    except Exception as e:  # torch raises many types for bad zips/pickles
        raise CheckpointError(f"{path}: not a loadable .pth file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: .pth holds a {type(sd).__name__}, not a state dict")
    names = {i: k for k in sd if isinstance(k, str) and (i := time_state_layer(k)) is not None}
    if not names:
        raise _no_state(path)
    bad = next((names[i] for i in names if not (torch.is_tensor(sd[names[i]]) and sd[names[i]].is_floating_point())),
               None)
    if bad is not None:
        raise CheckpointError(f"{path}: '{bad}' is not a floating-point tensor")
    LHNN = check_time_state_layers({i: tuple(sd[k].shape) for i, k in names.items()}, path, expect_LHNN)
    return np.stack([sd[names[i]].float().numpy() for i in range(LHNN[0])])


def _other_time_state(path: Path, expect_LHNN) -> np.ndarray:
    from rwkvjax.io.formats import read_file, split_time_state  # rwkv.cpp, ... by content
    wkv = split_time_state(read_file(path), path, expect_LHNN)
    if wkv is None:
        raise _no_state(path)
    return wkv


def read_time_state(path: str | os.PathLike, expect_LHNN: tuple[int, ...] | None = None) -> np.ndarray:
    """S0 [L,H,N,N] float32 from a time_state file or a model file with merged `time_state` tensors.
    Names, layer indices and shapes are checked (against `expect_LHNN` when given) before the tensors are read,
    so a file that claims a huge layer index or shape is refused at once, in a short message."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then its JSON
        wkv = _safetensors_time_state(path, expect_LHNN)
    elif head[:2] == b"PK":  # a torch zip
        wkv = _pth_time_state(path, expect_LHNN)
    else:
        wkv = _other_time_state(path, expect_LHNN)
    if not np.isfinite(wkv).all():
        bad = next(i for i in range(len(wkv)) if not np.isfinite(wkv[i]).all())
        raise CheckpointError(f"{path}: 'blocks.{bad}.att.time_state' holds non-finite values")
    return wkv


def time_state_shape(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """The [L, H, N, N] a safetensors time_state file declares, from its header alone (checked as
    `read_time_state` checks it); None for other formats, whose shapes need the file opened."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not (len(head) >= 9 and head[8:9] == b"{"):
        return None
    from safetensors import SafetensorError, safe_open

    from rwkvjax.io.formats import check_time_state_layers, time_state_layer
    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = {i: tuple(f.get_slice(k).get_shape()) for k in f.keys()
                      if (i := time_state_layer(k)) is not None}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None
    if not shapes:
        raise _no_state(path)
    return check_time_state_layers(shapes, path)
