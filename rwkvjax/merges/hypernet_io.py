"""Hypernetwork files: safetensors tensors `inp.w1` ... `out.b2` plus the hash of the model they were trained for."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, safe_open, save_file

from rwkvjax.atomic import atomic_path
from rwkvjax.errors import CheckpointError, CheckpointMismatch, MissingFile
from rwkvjax.merges.hypernet import HyperParams, PairMLP, init_hypernet
from rwkvjax.model.config import Architecture

FORMAT = "rwkvjax-hypernet-1"


def _flat(hyper: HyperParams) -> dict[str, np.ndarray]:
    return {f"{side}.{f.name}": np.asarray(getattr(getattr(hyper, side), f.name), np.float32)
            for side in ("inp", "out") for f in dataclasses.fields(PairMLP)}


def save_hypernet(path: str | Path, hyper: HyperParams, config: Architecture, model_hash: str, meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md = {"format": FORMAT, "n_embd": str(config.n_embd), "vocab_size": str(config.vocab_size),
          "model_hash": model_hash, "meta": json.dumps(meta)}
    with atomic_path(path, private=False) as tmp:  # a crash never leaves a half-written file under the final name
        save_file(_flat(hyper), str(tmp), metadata=md)


def load_hypernet(path: str | Path, config: Architecture, model_hash: str | None = None) -> HyperParams:
    """Read a `save_hypernet` file and check it fits the model; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"hypernetwork file {path} does not exist (write one with `python cli.py hypernet`)")
    try:
        t = load_file(str(path))
        with safe_open(str(path), "np") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata 'format' is {md.get('format')!r}, expected {FORMAT!r}; "
                         "it is not a hypernetwork file written by `python cli.py hypernet`")
    if model_hash is not None and md.get("model_hash") != model_hash:
        raise CheckpointMismatch(f"{path}: trained for model {md.get('model_hash')}, but the loaded model is {model_hash}; "
                         "train a hypernetwork for this model with `python cli.py hypernet`")
    want = _flat(init_hypernet(config, jax.random.key(0)))
    for name, ref in want.items():
        if name not in t:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
        if t[name].shape != ref.shape:
            raise CheckpointMismatch(f"{path}: tensor {name!r} has shape {t[name].shape}, this model (n_embd={config.n_embd}) "
                             f"needs {ref.shape}; train a hypernetwork for this model")
        if not np.isfinite(t[name]).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds non-finite values")
    mlp = lambda side: PairMLP(**{f.name: jnp.asarray(t[f"{side}.{f.name}"]) for f in dataclasses.fields(PairMLP)})
    return HyperParams(inp=mlp("inp"), out=mlp("out"))


def start_hypernet(config: Architecture, path: str | None, seed: int, model_hash: str | None = None) -> HyperParams:
    """A trained hypernetwork file when given, else the exact untrained init."""
    if path:
        return load_hypernet(path, config, model_hash)
    return init_hypernet(config, jax.random.key(seed))
