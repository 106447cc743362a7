"""RWKV-PEFT `time_state` files: `blocks.{i}.att.time_state`, [H, N, N] per layer in the official
[value, key] orientation (https://github.com/JL-er/RWKV-PEFT), as `.pth` (torch) or `.safetensors`.

Reading also accepts a model file with the states merged in (any extra tensors are ignored there) and
refuses anything that is not a complete, finite set of layers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_path
from rwkvjax.errors import CheckpointError, ConfigError, MissingFile



def write_time_state(path: str | os.PathLike, wkv_LHNN: np.ndarray, dtype: str = "fp32") -> str:
    """Write S0 [L,H,N,N] as RWKV-PEFT tensors; the format follows the suffix. Atomic."""
    path = Path(path)
    if dtype not in ("fp32", "bf16"):
        raise ConfigError(f"--dtype {dtype!r}: a time_state file is fp32 or bf16")
    wkv = np.asarray(wkv_LHNN, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            return {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    from rwkvjax.io.formats import read_file  # .pth, rwkv.cpp, ... by content
    return read_file(path)


def read_time_state(path: str | os.PathLike) -> np.ndarray:
    """S0 [L,H,N,N] float32 from a time_state file or a model file with merged `time_state` tensors."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{path}: no such file")
    from rwkvjax.io.formats import split_time_state
    wkv = split_time_state(_read_tensors(path), path)
    if wkv is None:
        raise CheckpointError(f"{path}: no 'blocks.{{i}}.att.time_state' tensors (not an RWKV-PEFT state file)")
    return wkv
