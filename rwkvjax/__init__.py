"""rwkvjax: RWKV-7 (x070) in pure-functional JAX.

The public names below are imported on first use, so `import rwkvjax.cli` (and `python cli.py -h`)
does not pay for jax. Subpackages, in import order: model (config, params, state, forward, WKV),
io (checkpoint formats, hub, training checkpoints), text (tokenizers), merges (dynamic tokenizer and
hypernetwork), train, eval, serve, cli.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "Architecture": "rwkvjax.model.config", "PRESETS": "rwkvjax.model.config",
    "Params": "rwkvjax.model.params", "CheckpointError": "rwkvjax.errors",
    "State": "rwkvjax.model.state", "zero_state": "rwkvjax.model.state",
    "forward": "rwkvjax.model.rwkv7", "WkvImpl": "rwkvjax.model.wkv",
    "load": "rwkvjax.io.formats", "UserError": "rwkvjax.errors",
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
