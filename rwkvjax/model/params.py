"""Parameter pytrees and the canonical map to BlinkDL (official `.pth`) tensor names.

Every loader produces a dict in official naming and PyTorch layout; `from_official` is the one place
that turns it into a `Params` pytree (linear weights stored [in, out], per-layer leaves stacked on L; int8
matrices stay [out, in], see `rwkvjax.model.quant`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.errors import CheckpointError
from rwkvjax.model.config import Architecture
from rwkvjax.model.quant import SCALE_SUFFIX, QInt8, dequantize_rows, quantize_rows


def _pytree(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


@_pytree
class Block:
    """Per-layer weights, each leaf stacked on a leading L axis. Matrices are [in, out] (or `QInt8`, [out, in])."""

    ln1_w: jax.Array
    ln1_b: jax.Array
    ln2_w: jax.Array
    ln2_b: jax.Array
    x_r: jax.Array
    x_w: jax.Array
    x_k: jax.Array
    x_v: jax.Array
    x_a: jax.Array
    x_g: jax.Array
    w0: jax.Array
    w1: jax.Array
    w2: jax.Array
    a0: jax.Array
    a1: jax.Array
    a2: jax.Array
    v0: jax.Array  # layer 0 holds zeros: its value residual is the identity
    v1: jax.Array
    v2: jax.Array
    g1: jax.Array
    g2: jax.Array
    k_k: jax.Array
    k_a: jax.Array
    r_k: jax.Array  # [L, H, N]
    W_r: jax.Array
    W_k: jax.Array
    W_v: jax.Array
    W_o: jax.Array
    lnx_w: jax.Array
    lnx_b: jax.Array
    ffn_x_k: jax.Array
    ffn_key: jax.Array
    ffn_value: jax.Array


@_pytree
class Params:
    emb: jax.Array  # [V, C] (or QInt8 [V, C], one scale per token)
    ln0_w: jax.Array
    ln0_b: jax.Array
    blocks: Block  # leaves stacked on L; or a tuple of per-layer Blocks (`unstack_layers`, for decoding)
    ln_out_w: jax.Array
    ln_out_b: jax.Array
    head: jax.Array  # [C, V] (or QInt8 [V, C])


# field -> (official suffix under blocks.i., transposed in the official layout)
_BLOCK_NAMES: dict[str, tuple[str, bool]] = {
    "ln1_w": ("ln1.weight", False), "ln1_b": ("ln1.bias", False),
    "ln2_w": ("ln2.weight", False), "ln2_b": ("ln2.bias", False),
    "x_r": ("att.x_r", False), "x_w": ("att.x_w", False), "x_k": ("att.x_k", False),
    "x_v": ("att.x_v", False), "x_a": ("att.x_a", False), "x_g": ("att.x_g", False),
    "w0": ("att.w0", False), "w1": ("att.w1", False), "w2": ("att.w2", False),
    "a0": ("att.a0", False), "a1": ("att.a1", False), "a2": ("att.a2", False),
    "v0": ("att.v0", False), "v1": ("att.v1", False), "v2": ("att.v2", False),
    "g1": ("att.g1", False), "g2": ("att.g2", False),
    "k_k": ("att.k_k", False), "k_a": ("att.k_a", False), "r_k": ("att.r_k", False),
    "W_r": ("att.receptance.weight", True), "W_k": ("att.key.weight", True),
    "W_v": ("att.value.weight", True), "W_o": ("att.output.weight", True),
    "lnx_w": ("att.ln_x.weight", False), "lnx_b": ("att.ln_x.bias", False),
    "ffn_x_k": ("ffn.x_k", False), "ffn_key": ("ffn.key.weight", True),
    "ffn_value": ("ffn.value.weight", True),
}
_VECTORS = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a", "ffn_x_k"}
_LAYER0_OPTIONAL = {"v0", "v1", "v2"}
_TOP_NAMES = {"emb": "emb.weight", "ln0_w": "blocks.0.ln0.weight", "ln0_b": "blocks.0.ln0.bias",
              "ln_out_w": "ln_out.weight", "ln_out_b": "ln_out.bias", "head": "head.weight"}
# The matrices int8 quantization applies to (rwkvjax.model.quant): ~97% of the weights.
QUANTIZED = ("W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value", "head", "emb")
_DEEPEMBED = re.compile(r"ffn\.s_emb|ffn\.s[012]$|s_emb_x")


def infer_config(sd: Mapping[str, np.ndarray], source: str = "checkpoint") -> Architecture:
    """Architecture from official-name tensor shapes (L from block indices, H/N from r_k, D* from LoRAs)."""
    _reject_unknown_variants(sd, source)
    for name in ("emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.ffn.key.weight"):
        if name not in sd:
            raise CheckpointError(f"{source}: tensor '{name}' is missing; this is not an RWKV-7 x070 checkpoint")
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    V, C = _shape(sd, "emb.weight")
    H, N = _shape(sd, "blocks.0.att.r_k")
    if H * N != C:
        raise CheckpointError(f"{source}: tensor 'blocks.0.att.r_k' has shape {(H, N)} but n_embd is {C}")
    v_layer = 1 if n_layer > 1 else 0
    d_mv = _shape(sd, f"blocks.{v_layer}.att.v1")[1] if f"blocks.{v_layer}.att.v1" in sd else 32
    return Architecture(
        vocab_size=V, n_embd=C, n_layer=n_layer,
        dim_ffn=_shape(sd, "blocks.0.ffn.key.weight")[0],
        d_decay=_shape(sd, "blocks.0.att.w1")[1], d_aaa=_shape(sd, "blocks.0.att.a1")[1],
        d_mv=d_mv, d_gate=_shape(sd, "blocks.0.att.g1")[1], head_size=N,
    )


def _shape(sd, name):
    return tuple(np.shape(sd[name]))


def _reject_unknown_variants(sd, source):
    bad = [k for k in sd if _DEEPEMBED.search(k)]
    if bad:
        raise CheckpointError(
            f"{source}: tensor '{bad[0]}' belongs to a DeepEmbed RWKV-7 variant, which rwkvjax does not support; "
            "use a standard x070 checkpoint")
    if any(k.endswith("att.time_state") for k in sd) and "emb.weight" not in sd:
        raise CheckpointError(
            f"{source}: holds only 'time_state' tensors (a state-tuning file), not a model; "
            "load the base model and pass this file as a tuned state")


def _reject_unknown_tensors(sd, arch: Architecture, source):
    """Every tensor must map to a parameter: an unknown one means an unsupported variant, never dropped data."""
    known = set(_TOP_NAMES.values()) | {f"blocks.{i}.{suffix}" for i in range(arch.n_layer)
                                        for suffix, _ in _BLOCK_NAMES.values()}
    known |= {name + SCALE_SUFFIX for name in known if _quantizable(name)}
    unknown = sorted(set(sd) - known)
    if not unknown:
        return
    if unknown[0].endswith("att.time_state"):
        raise CheckpointError(
            f"{source}: tensor '{unknown[0]}' is a tuned WKV state merged into the model; remove the "
            "'*.time_state' tensors and pass them as the initial state (rwkvjax.model.state.start_state)")
    raise CheckpointError(
        f"{source}: tensor '{unknown[0]}' is not part of a standard RWKV-7 x070 model (unknown variant; "
        f"{len(unknown)} unexpected tensor(s)); rwkvjax refuses to drop weights silently")


def expected_shapes(arch: Architecture, layer: int) -> dict[str, tuple[int, ...]]:
    """Official-layout shape of every tensor of one block (vectors may also be [1,1,C] or [C])."""
    C, F, H, N = arch.n_embd, arch.dim_ffn, arch.n_head, arch.head_size
    s = {
        "ln1_w": (C,), "ln1_b": (C,), "ln2_w": (C,), "ln2_b": (C,),
        "w1": (C, arch.d_decay), "w2": (arch.d_decay, C), "a1": (C, arch.d_aaa), "a2": (arch.d_aaa, C),
        "v1": (C, arch.d_mv), "v2": (arch.d_mv, C), "g1": (C, arch.d_gate), "g2": (arch.d_gate, C),
        "r_k": (H, N), "W_r": (C, C), "W_k": (C, C), "W_v": (C, C), "W_o": (C, C),
        "lnx_w": (C,), "lnx_b": (C,), "ffn_key": (F, C), "ffn_value": (C, F),
    }
    s.update({f: (C,) for f in _VECTORS})
    return s


def from_official(sd: Mapping[str, np.ndarray], dtype=jnp.float32, source: str = "checkpoint"
                  ) -> tuple[Architecture, Params]:
    """Official-name tensors (PyTorch layout) -> (Architecture, Params). Validates every shape first.

    `dtype` is the weight dtype; `jnp.int8` quantizes the `QUANTIZED` matrices (`rwkvjax.model.quant`) and keeps
    every other tensor float32. Int8 tensors that come with their `<name>_scale` (a quantized file) stay int8
    whatever `dtype` is, which then applies to the float tensors only.
    """
    arch = infer_config(sd, source)
    _reject_unknown_tensors(sd, arch, source)
    quantize = jnp.dtype(dtype) == jnp.int8
    float_dtype = jnp.float32 if quantize else dtype
    stored = {k[:-len(SCALE_SUFFIX)] for k in sd if k.endswith(SCALE_SUFFIX)}
    quant_fields = {f for f in QUANTIZED if quantize or any(_field_of(n) == f for n in stored)}
    layers: dict[str, list] = {f: [] for f in _BLOCK_NAMES}
    for i in range(arch.n_layer):
        want = expected_shapes(arch, i)
        for field, (suffix, transposed) in _BLOCK_NAMES.items():
            name = f"blocks.{i}.{suffix}"
            if name not in sd:
                if i == 0 and field in _LAYER0_OPTIONAL:
                    arr = np.zeros(want[field], np.float32)  # unused in layer 0
                else:
                    raise CheckpointError(f"{source}: tensor '{name}' is missing")
            else:
                arr = np.asarray(sd[name])
                if field in _VECTORS:
                    arr = arr.reshape(-1)
                if tuple(arr.shape) != want[field]:
                    raise CheckpointError(
                        f"{source}: tensor '{name}' has shape {tuple(arr.shape)}, expected {want[field]}")
                if i == 0 and field in _LAYER0_OPTIONAL:
                    arr = np.zeros(want[field], np.float32)  # unused in layer 0: same params from every format
            if field in quant_fields:
                layers[field].append(_int8_rows(sd, name, arr, source))
            else:
                _refuse_int8(name, arr, source)
                layers[field].append(arr.T if transposed else arr)
    top = {}
    for field, name in _TOP_NAMES.items():
        if name not in sd:
            raise CheckpointError(f"{source}: tensor '{name}' is missing")
        top[field] = np.asarray(sd[name])
    V, C = arch.vocab_size, arch.n_embd
    for field, want in (("ln0_w", (C,)), ("ln0_b", (C,)), ("ln_out_w", (C,)), ("ln_out_b", (C,)),
                        ("head", (V, C))):
        if tuple(top[field].shape) != want:
            raise CheckpointError(
                f"{source}: tensor '{_TOP_NAMES[field]}' has shape {tuple(top[field].shape)}, expected {want}")
    cast = lambda a: jnp.asarray(np.asarray(a, np.float32), float_dtype)

    def top_matrix(field, transposed):
        name = _TOP_NAMES[field]
        if field in quant_fields:
            q, scale = _int8_rows(sd, name, top[field], source)
            return QInt8(jnp.asarray(q), jnp.asarray(scale))
        _refuse_int8(name, top[field], source)
        return cast(top[field].T if transposed else top[field])

    blocks = Block(**{f: _stack_int8(v) if f in quant_fields else cast(np.stack(v)) for f, v in layers.items()})
    for f in ("ln0_w", "ln0_b", "ln_out_w", "ln_out_b"):
        _refuse_int8(_TOP_NAMES[f], top[f], source)
    params = Params(
        emb=top_matrix("emb", False), ln0_w=cast(top["ln0_w"]), ln0_b=cast(top["ln0_b"]), blocks=blocks,
        ln_out_w=cast(top["ln_out_w"]), ln_out_b=cast(top["ln_out_b"]), head=top_matrix("head", True),
    )
    return arch, params


def _field_of(name: str) -> str | None:
    """The `Params`/`Block` field an official tensor name belongs to."""
    for field, top in _TOP_NAMES.items():
        if name == top:
            return field
    suffix = name.split(".", 2)[-1] if name.startswith("blocks.") else None
    return next((f for f, (sfx, _) in _BLOCK_NAMES.items() if sfx == suffix), None)


def _quantizable(name: str) -> bool:
    return _field_of(name) in QUANTIZED


def _int8_rows(sd, name: str, arr: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(int8 [out, in], float32 scale [out]) of one matrix: as stored with its scale, or quantized now."""
    scale_name = name + SCALE_SUFFIX
    if scale_name not in sd:
        _refuse_int8(name, arr, source)
        return quantize_rows(arr)
    scale = np.asarray(sd[scale_name], np.float32)
    if arr.dtype != np.int8:
        raise CheckpointError(f"{source}: tensor '{scale_name}' scales '{name}', which is {arr.dtype}, not int8")
    if scale.shape != arr.shape[:1]:
        raise CheckpointError(f"{source}: tensor '{scale_name}' has shape {scale.shape}, expected {arr.shape[:1]}")
    if not np.all(scale > 0):
        raise CheckpointError(f"{source}: tensor '{scale_name}' holds scales <= 0; the file is damaged")
    return arr, scale


def _refuse_int8(name: str, arr: np.ndarray, source: str) -> None:
    if arr.dtype == np.int8:
        raise CheckpointError(f"{source}: tensor '{name}' is int8 without a '{name}{SCALE_SUFFIX}' tensor; "
                              "only files written by `cli.py convert --dtype int8` hold int8 weights")


def _stack_int8(pairs: list[tuple[np.ndarray, np.ndarray]]) -> QInt8:
    """Per-layer (q, scale) pairs -> one QInt8 stacked on L."""
    return QInt8(jnp.asarray(np.stack([q for q, _ in pairs])), jnp.asarray(np.stack([s for _, s in pairs])))


def to_official(params: Params, arch: Architecture) -> dict[str, np.ndarray]:
    """Params -> official names and PyTorch layout (vectors as [1,1,C], as BlinkDL stores them).

    An int8 matrix gives its int8 tensor and `<name>_scale` (float32 [out])."""
    out: dict[str, np.ndarray] = {}

    def put(name, arr, transposed):
        if isinstance(arr, QInt8):
            out[name], out[name + SCALE_SUFFIX] = np.asarray(arr.q), np.asarray(arr.scale)
        else:
            arr = np.asarray(arr)
            out[name] = arr.T if transposed else arr

    for field, name in _TOP_NAMES.items():
        put(name, getattr(params, field), field == "head")
    for field, (suffix, transposed) in _BLOCK_NAMES.items():
        stacked = getattr(params.blocks, field)
        for i in range(arch.n_layer):
            if i == 0 and field in _LAYER0_OPTIONAL:
                continue
            name = f"blocks.{i}.{suffix}"
            if isinstance(stacked, QInt8):
                put(name, QInt8(stacked.q[i], stacked.scale[i]), transposed)
            else:
                arr = np.asarray(stacked[i])
                put(name, arr.reshape(1, 1, -1) if field in _VECTORS else arr, transposed)
    return out


def quantize_official(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official-name tensors with every `QUANTIZED` float matrix replaced by int8 rows and `<name>_scale`."""
    out: dict[str, np.ndarray] = {}
    for name, arr in sd.items():
        if _quantizable(name) and np.asarray(arr).dtype != np.int8:
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(arr)
        else:
            out[name] = arr  # a vector, or an int8 matrix and its scale already
    return out


def dequantize_official(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official-name tensors with every int8 matrix and its `<name>_scale` turned back into float32."""
    return {name: (dequantize_rows(arr, sd[name + SCALE_SUFFIX]) if np.asarray(arr).dtype == np.int8 else arr)
            for name, arr in sd.items() if not (name.endswith(SCALE_SUFFIX) and name[:-len(SCALE_SUFFIX)] in sd)}


def params_hash(params) -> str:
    """Content hash of a parameter pytree (paths, shapes, dtypes and values of every leaf).

    Tuned states, hypernetworks and checkpoints record it, so they are never applied to another base model.
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{a.shape}:{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()[:32]


@_pytree
class OutIn:
    """A weight matrix stored [out, in] (PyTorch's layout) instead of [in, out]: a float array or a `QInt8`."""

    w: jax.Array


_MATRICES = ("W_r", "W_k", "W_v", "W_o", "ffn_key", "ffn_value", "head")


def unstack_layers(params: Params) -> Params:
    """The same weights laid out for decoding: one Block per layer, the large matrices [out, in].

    A stacked layer loop copies each layer's weights out of the stack at every token (a dynamic slice
    XLA:CPU materialises), which costs more than the layer's matmuls at batch 1; separate arrays are read
    in place. XLA:CPU also multiplies a few rows by an [out, in] matrix faster than by an [in, out] one.
    Int8 matrices are [out, in] already. Training keeps the stacked form (one scanned, rematerialisable layer
    body). Measured in benchmarks/RESULTS.md (serving).
    """
    if isinstance(params.blocks, tuple):
        return params
    L = jax.tree.leaves(params.blocks)[0].shape[0]

    def out_in(a, i=None):
        if isinstance(a, QInt8):
            q, scale = (a.q, a.scale) if i is None else (a.q[i], a.scale[i])
            return OutIn(QInt8(jnp.asarray(np.ascontiguousarray(np.asarray(q))), jnp.array(scale)))
        return OutIn(jnp.asarray(np.ascontiguousarray(np.asarray(a if i is None else a[i]).T)))

    blocks = tuple(Block(**{f.name: (out_in(getattr(params.blocks, f.name), i) if f.name in _MATRICES
                                     else jnp.array(getattr(params.blocks, f.name)[i]))
                            for f in dataclasses.fields(Block)}) for i in range(L))
    return dataclasses.replace(params, blocks=blocks, head=out_in(params.head))
