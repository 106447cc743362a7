"""Write parameters as one safetensors file with official tensor names (the one exporter), and `convert`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Config
from rwkvjax.model.params import Params, from_official, to_official

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


def save_official(params: Params, config: Config, path: str | os.PathLike, dtype: str = "bf16",
                  meta: dict | None = None) -> str:
    """Official-name safetensors, loadable by `rwkvjax.load` and convertible to `.pth`; written atomically."""
    from safetensors.flax import save_file
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: the output file name must end in .safetensors")
    tensors = {k: jnp.asarray(np.ascontiguousarray(v), DTYPES[dtype])
               for k, v in to_official(jax.device_get(params), config).items()}
    md = {"format": "rwkv7-official-names", "config": json.dumps(dataclasses.asdict(config)), **(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=md)
    tmp.replace(path)  # never leave a half-written file under the final name
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
    n = sum(int(np.size(v)) for v in to_official(params, cfg).values())
    return {"out": str(out), "tensors": len(to_official(params, cfg)), "dtype": dtype, "params": n,
            "config": dataclasses.asdict(cfg)}
