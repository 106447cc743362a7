"""Random initialisation of an RWKV-7 from scratch, following the official x070 training init.

Used by `pretrain` and by tests that need a model whose state matters (`live_output=True` gives the
attention output and FFN value non-zero weights, which the official init starts at zero).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Block, Params


def _orthogonal(rng: np.random.Generator, shape, gain: float) -> np.ndarray:
    a = rng.standard_normal((max(shape), min(shape)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    q = q if shape[0] >= shape[1] else q.T
    return (gain * q[: shape[0], : shape[1]]).astype(np.float32)


def init_params(config: Architecture, seed: int = 0, *, live_output: bool = False, dtype=jnp.float32) -> Params:
    rng = np.random.default_rng(seed)
    C, L, N, F, V = config.n_embd, config.n_layer, config.head_size, config.dim_ffn, config.vocab_size
    n = np.arange(C)
    ddd = n / C
    linear = n / (C - 1) - 0.5
    zz = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zz * np.abs(zz)
    uni = lambda shape, bound: rng.uniform(-bound, bound, shape).astype(np.float32)
    layers = []
    for i in range(L):
        r01 = i / max(L - 1, 1)
        r10 = 1 - i / L
        lora = lambda d: (np.zeros((C, d), np.float32), _orthogonal(rng, (d, C), 0.1))
        w1, w2 = lora(config.d_decay)
        a1, a2 = lora(config.d_aaa)
        v1, v2 = lora(config.d_mv)
        g1, g2 = lora(config.d_gate)
        www = -6 + 6 * (n / (C - 1)) ** (1 + r01 ** 0.3)
        out_bound = 0.5 / np.sqrt(C) if live_output else 0.0
        layers.append(dict(
            ln1_w=np.ones(C), ln1_b=np.zeros(C), ln2_w=np.ones(C), ln2_b=np.zeros(C),
            x_r=1 - ddd ** (0.2 * r10), x_w=1 - ddd ** (0.9 * r10), x_k=1 - ddd ** (0.7 * r10),
            x_v=1 - ddd ** (0.7 * r10), x_a=1 - ddd ** (0.9 * r10), x_g=1 - ddd ** (0.2 * r10),
            w0=www + 0.5 + 2.5 * zigzag, w1=w1, w2=w2,
            a0=-0.19 + 0.3 * zigzag + 0.4 * linear, a1=a1, a2=a2,
            v0=0.73 - 0.4 * linear, v1=v1, v2=v2, g1=g1, g2=g2,
            k_k=0.71 - 0.1 * linear, k_a=np.full(C, 1.02), r_k=np.full((C // N, N), -0.04),
            W_r=uni((C, C), 0.5 / np.sqrt(C)), W_k=uni((C, C), 0.05 / np.sqrt(C)),
            W_v=uni((C, C), 0.5 / np.sqrt(C)), W_o=uni((C, C), out_bound),
            lnx_w=np.full(C, ((i + 1) / L) ** 0.7), lnx_b=np.zeros(C),
            ffn_x_k=1 - ddd ** (r10 ** 4), ffn_key=uni((C, F), 0.5 / np.sqrt(C)),
            ffn_value=uni((F, C), out_bound),
        ))
    stack = lambda k: jnp.asarray(np.stack([l[k] for l in layers]).astype(np.float32), dtype)
    blocks = Block(**{k: stack(k) for k in layers[0]})
    head_gain = 0.5 * np.sqrt(V / C) if V > C else 0.5
    f = lambda a: jnp.asarray(np.asarray(a, np.float32), dtype)
    return Params(emb=f(uni((V, C), 1e-4)), ln0_w=f(np.ones(C)), ln0_b=f(np.zeros(C)), blocks=blocks,
                  ln_out_w=f(np.ones(C)), ln_out_b=f(np.zeros(C)), head=f(_orthogonal(rng, (C, V), head_gain)))
