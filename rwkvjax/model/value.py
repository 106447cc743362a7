"""The model value `rwkvjax.load` returns: architecture, weights, tokenizer, weight dtype, content hash and the
start state the file ships with, so no application derives them again (the shape of recurrentgemma's package
face: one value carrying config, params and tokenizer).

`Model.forward` is the public way to run the model, prefill or decode: at T = 1 it runs the decoding layout of
the weights (`params.unstack_layers`: one array per layer, large matrices [out, in]), which a per-token loop
over the stacked weights cannot match on XLA:CPU (each token would copy every layer's weights out of the stack;
benchmarks/RESULTS.md, "Forward vs official").
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import ConfigError
from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Params, params_hash, unstack_layers
from rwkvjax.model.rwkv7 import forward
from rwkvjax.model.state import State, start_state, zero_state
from rwkvjax.model.wkv import WkvImpl
from rwkvjax.text.tokenizer import Tokenizer, tokenizer_id

# The one weight-dtype vocabulary: what `load`, the CLI's --dtype and every settings file say. Int8 quantizes the
# large matrices (rwkvjax/model/quant.py); the recurrence, its decay and the state are float32 for every dtype.
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16, "int8": jnp.int8}


def weight_dtype(name: str):
    """The jnp dtype of a weight-dtype name, or a ConfigError naming the choices."""
    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[name]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded RWKV-7 model. `params` are stacked on L (the layout training scans and hashes); the decoding
    layout and the content hash are computed once, on first use."""

    arch: Architecture
    params: Params
    tokenizer: Tokenizer
    dtype: str = "fp32"
    source: str = ""
    start_wkv_LHNN: np.ndarray | None = None  # the S0 the file ships with (merged `time_state` tensors), if any
    start_att_shift_LC: np.ndarray | None = None  # tuned shift states, where a named state has them
    start_ffn_shift_LC: np.ndarray | None = None

    def __post_init__(self):
        weight_dtype(self.dtype)
        if self.start_wkv_LHNN is not None:
            object.__setattr__(self, "start_wkv_LHNN", check_start(self.arch, self.start_wkv_LHNN, self.source))
        L, C = self.arch.n_layer, self.arch.n_embd
        for name in ("start_att_shift_LC", "start_ffn_shift_LC"):
            a = getattr(self, name)
            if a is not None:
                if self.start_wkv_LHNN is None or np.shape(a) != (L, C):
                    raise ConfigError(f"{self.source or 'model'}: {name} must be [{L}, {C}] and come with a start "
                                      f"S0; got {np.shape(a)}")
                object.__setattr__(self, name, np.asarray(a, np.float32))

    @functools.cached_property
    def hash(self) -> str:
        """`params_hash` of the weights: tuned states, memories and checkpoints record it and are refused on
        another base model."""
        return params_hash(self.params)

    @functools.cached_property
    def tokenizer_id(self) -> str:
        return tokenizer_id(self.tokenizer)

    @functools.cached_property
    def decode_params(self) -> Params:
        """The weights laid out for decoding (`unstack_layers`); a second copy of the weights, made on first use."""
        return unstack_layers(self.params)

    def with_start(self, wkv_LHNN, *, att_shift_LC=None, ffn_shift_LC=None) -> Model:
        """The same model starting from another S0 [L,H,N,N] (a tuned state, a `time_state` file) and, where
        they were tuned, shift states [L,C]; None: zeros. The weights, their decoding layout and hash are shared."""
        new = dataclasses.replace(self, start_wkv_LHNN=None if wkv_LHNN is None else np.asarray(wkv_LHNN),
                                  start_att_shift_LC=att_shift_LC, start_ffn_shift_LC=ffn_shift_LC)
        for name in ("hash", "tokenizer_id", "decode_params"):
            if name in self.__dict__:
                new.__dict__[name] = self.__dict__[name]
        return new

    def decoding(self) -> Model:
        """The same model holding only the decoding layout (`params` = `decode_params`), for sampling and serving,
        where keeping the stacked copy too would double the memory. Its hash is still the stacked weights' hash
        (computed here, before they can go); it cannot be trained (training scans the stacked layers)."""
        new = dataclasses.replace(self, params=self.decode_params)
        new.__dict__.update(hash=self.hash, decode_params=new.params)
        if "tokenizer_id" in self.__dict__:
            new.__dict__["tokenizer_id"] = self.tokenizer_id
        return new

    def initial_state(self, batch_size: int = 1) -> State:
        """The state a sequence starts from: the shipped (or `with_start`) S0, else zeros."""
        if self.start_wkv_LHNN is None:
            return zero_state(self.arch, batch_size)
        return start_state(self.start_wkv_LHNN, batch_size, att_shift_LC=self.start_att_shift_LC,
                           ffn_shift_LC=self.start_ffn_shift_LC)

    def forward(self, tokens_BT, state: State | None = None, *, wkv_impl: WkvImpl | str = WkvImpl.AUTO
                ) -> tuple[jax.Array, State]:
        """Token ids [B,T] (or [T]) -> (logits [B,T,V] float32, the state after them). `state` defaults to
        `initial_state(B)`. Any T >= 1; T = 1 (decoding) runs `decode_params`."""
        tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
        if tokens_BT.ndim == 1:
            tokens_BT = tokens_BT[None]
        if tokens_BT.ndim != 2 or tokens_BT.shape[1] == 0:
            raise ConfigError(f"Model.forward: token ids must be [B, T] with T >= 1, got shape {tokens_BT.shape}")
        if state is None:
            state = self.initial_state(tokens_BT.shape[0])
        params = self.decode_params if tokens_BT.shape[1] == 1 else self.params
        return forward(params, tokens_BT, state, config=self.arch, wkv_impl=wkv_impl)


def check_start(arch: Architecture, wkv_LHNN, where: str = "start state") -> np.ndarray:
    """S0 as float32 [L,H,N,N] for this architecture, or a ConfigError saying what it is instead."""
    s0 = np.asarray(wkv_LHNN, np.float32)
    want = (arch.n_layer, arch.n_head, arch.head_size, arch.head_size)
    if s0.shape != want:
        raise ConfigError(f"{where}: a start state of shape {s0.shape} does not fit this model (it needs {want}: "
                          "layers, heads, head size, head size)")
    if not np.isfinite(s0).all():
        raise ConfigError(f"{where}: the start state holds NaN or Inf")
    return s0
