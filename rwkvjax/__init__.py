"""rwkvjax: RWKV-7 (x070) in pure-functional JAX."""

from rwkvjax.config import PRESETS, Config
from rwkvjax.loaders import load
from rwkvjax.model import forward
from rwkvjax.params import CheckpointError, Params
from rwkvjax.state import State, zero_state
from rwkvjax.wkv import WkvImpl

__all__ = ["Config", "PRESETS", "Params", "State", "WkvImpl", "CheckpointError", "load", "forward", "zero_state"]
