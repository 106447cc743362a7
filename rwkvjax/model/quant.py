"""Int8 weight-only quantization: one float32 scale per output row, W[o, :] ≈ q[o, :] * scale[o].

Only the large matrices are quantized: the four time-mix linears, the FFN, the head and the embedding hold
~97% of a model's weights and nearly all of its decode-time memory traffic. LoRAs, mixing vectors, norms, the decay
and the recurrent state stay float32. Rows are symmetric (absmax / 127, no zero point), so a matmul is
`(x @ q.T) * scale`: the scale is applied once per output, after the dot.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# safetensors metadata marker of a quantized file, and the suffix of each quantized tensor's scale
MARKER_KEY, MARKER = "quantization", "int8-rows"
SCALE_SUFFIX = "_scale"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QInt8:
    """A weight matrix W [out, in] (PyTorch's layout) as int8 rows and their scales; leading axes (layers) allowed."""

    q: jax.Array      # int8 [..., out, in]
    scale: jax.Array  # float32 [..., out]


def quantize_rows(w_OI) -> tuple[np.ndarray, np.ndarray]:
    """float [..., out, in] -> (int8 [..., out, in], float32 scale [..., out]); an all-zero row gets scale 1."""
    w = np.asarray(w_OI, np.float32)
    amax = np.max(np.abs(w), axis=-1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q_OI, scale_O) -> np.ndarray:
    """The float32 matrix [..., out, in] a quantized one stands for."""
    return np.asarray(q_OI, np.float32) * np.asarray(scale_O, np.float32)[..., None]


def embed_rows(emb: QInt8, tokens) -> jax.Array:
    """Rows of a quantized embedding [V, C] for integer ids, float32 [..., C]."""
    return jnp.take(emb.q, tokens, axis=0).astype(jnp.float32) * jnp.take(emb.scale, tokens, axis=0)[..., None]
