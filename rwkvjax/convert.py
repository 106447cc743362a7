"""Write any supported checkpoint as one safetensors file with official tensor names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from rwkvjax.loaders import read_official
from rwkvjax.params import from_official, to_official

_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


def convert(source: str, out: str | Path, dtype: str = "fp32") -> dict:
    """Convert `source` (file, folder or repo id) to `out` (.safetensors). Returns a summary dict."""
    from safetensors.flax import save_file
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {sorted(_DTYPES)}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the output file name must end in .safetensors")
    sd, where = read_official(source)
    cfg, params = from_official(sd, source=where)  # validates every tensor before anything is written
    tensors = {k: jnp.asarray(np.ascontiguousarray(v), _DTYPES[dtype]) for k, v in to_official(params, cfg).items()}
    meta = {"format": "rwkv7-official-names", "config": json.dumps(dataclasses.asdict(cfg)), "source": str(source)}
    tmp = out.with_suffix(".safetensors.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)  # never leave a half-written output under the final name
    return {"out": str(out), "tensors": len(tensors), "dtype": dtype, "params": int(sum(np.size(v) for v in tensors.values())),
            "config": dataclasses.asdict(cfg)}
