"""rwkvjax: RWKV-7 (x070) in pure-functional JAX.

The public names below are imported on first use, so `import rwkvjax.cli` (and `python cli.py -h`)
does not pay for jax. `load` returns a `Model` (architecture, weights, tokenizer, hash, start state);
`Model.forward` runs it, `score`/`generate`/`use_state` (rwkvjax/api.py) do the common tasks with it. Subpackages, in import order: model (config, params, state, forward, WKV),
io (checkpoint formats, hub, training checkpoints), text (tokenizers), merges (dynamic tokenizer and
hypernetwork), train, eval, serve, cli.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "Architecture": "rwkvjax.model.config", "PRESETS": "rwkvjax.model.config",
    "Params": "rwkvjax.model.params", "CheckpointError": "rwkvjax.errors", "UserError": "rwkvjax.errors",
    "State": "rwkvjax.model.state", "zero_state": "rwkvjax.model.state",
    "forward": "rwkvjax.model.rwkv7", "WkvImpl": "rwkvjax.model.wkv",
    "Model": "rwkvjax.model.value", "DTYPES": "rwkvjax.model.value", "load": "rwkvjax.io.formats",
    "read_time_state": "rwkvjax.io.time_state", "write_time_state": "rwkvjax.io.time_state",
    "score": "rwkvjax.api", "generate": "rwkvjax.api", "use_state": "rwkvjax.api",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rwkvjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
