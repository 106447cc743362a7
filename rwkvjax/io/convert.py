"""Write parameters as one safetensors file with official tensor names (the one exporter), and `convert`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.atomic import atomic_path, ensure_folder
from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Params, dequantize_official, from_official, quantize_official, to_official
from rwkvjax.model.quant import MARKER, MARKER_KEY, SCALE_SUFFIX
from rwkvjax.model.value import DTYPES


def save_official(params: Params, config: Architecture, path: str | os.PathLike, dtype: str = "bf16",
                  meta: dict | None = None) -> str:
    """Official-name safetensors, loadable by `rwkvjax.load` and convertible to `.pth`; written atomically.

    `int8` writes each quantized matrix as `<name>` (int8 [out, in]) plus `<name>_scale` (float32 [out]), the
    other tensors float32, and the metadata marker `quantization: int8-rows`.
    """
    from safetensors.flax import save_file
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: the output file name must end in .safetensors")
    sd = to_official(jax.device_get(params), config)
    md = {"format": "rwkv7-official-names", "config": json.dumps(dataclasses.asdict(config)), **(meta or {})}
    if dtype == "int8":
        sd = quantize_official(sd)
        md[MARKER_KEY] = MARKER
        cast = lambda a: jnp.asarray(a) if a.dtype == np.int8 else jnp.asarray(a, jnp.float32)
    else:
        sd = dequantize_official(sd)
        cast = lambda a: jnp.asarray(a, DTYPES[dtype])
    tensors = {k: cast(np.ascontiguousarray(v)) for k, v in sd.items()}
    ensure_folder(path.parent)
    with atomic_path(path, private=False) as tmp:  # never leave a half-written file under the final name
        save_file(tensors, str(tmp), metadata=md)
    return str(path)


def convert(source: str, out: str | Path, dtype: str = "fp32") -> dict:
    """Convert `source` (file, folder or repo id) to `out` (.safetensors). Returns a summary dict."""
    from rwkvjax.io.formats import read_official
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"{out}: the output file name must end in .safetensors")
    sd, where = read_official(source)
    cfg, params = from_official(sd, source=where)  # validates every tensor before anything is written
    save_official(params, cfg, out, dtype, {"source": str(source)})
    weights = {k: v for k, v in to_official(params, cfg).items() if not k.endswith(SCALE_SUFFIX)}
    return {"out": str(out), "tensors": len(weights), "dtype": dtype,
            "params": sum(int(np.size(v)) for v in weights.values()), "bytes": os.path.getsize(out),
            "config": dataclasses.asdict(cfg)}


def refuse_slow_dtype(dtype: str) -> None:
    """bf16 weights on a CPU backend: refused by the commands that decode or score (generate, serve, score).

    XLA:CPU has no fast bf16 matmul (AVX2): the decode loop ran at 0.39-0.49x its fp32 speed (benchmarks/RESULTS.md,
    "Forward vs official"), while int8 runs at about fp32's speed in a quarter of the memory with the trained
    model's bits per byte unchanged. GPU backends keep bf16.
    """
    if dtype == "bf16" and jax.default_backend() == "cpu":
        raise ConfigError("--dtype bf16: bf16 weights run 2-2.5x slower than fp32 on a CPU backend (XLA:CPU has no "
                          "fast bf16 matmul); use --dtype fp32, or --dtype int8 (a quarter of the memory)")
