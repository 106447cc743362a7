"""Model parameters without a trained model: a random official-format RWKV-7 checkpoint (the golden parity fixture,
tests/tools/make_golden.py; benchmarks at 0.1B shapes), and the parameter shapes of any size with nothing allocated
(`jax.eval_shape` at released sizes: tests/model/test_parity_official.py, tests/train/test_remat.py,
benchmarks/memory.py)."""

from __future__ import annotations

import jax
import numpy as np

from rwkvjax.model.config import Architecture
from rwkvjax.model.params import _BLOCK_NAMES, Block, Params, expected_shapes

# The golden fixture's dimensions. Small enough that the committed files stay under 3 MB; H = 2 heads of N = 64,
# L = 3 so that layers >= 1 exercise the value residual, V > 256 and F != 4C so no dimension is confused with another.
L, C, N, F, V = 3, 128, 64, 256, 384
D_DECAY, D_AAA, D_MV, D_GATE = 32, 32, 16, 48


def random_checkpoint(rng: np.random.Generator, *, L=L, C=C, N=N, F=F, V=V, D_DECAY=D_DECAY, D_AAA=D_AAA,
                      D_MV=D_MV, D_GATE=D_GATE) -> dict[str, np.ndarray]:
    """Every official x070 tensor (rwkvjax/model/params.py), in official names and PyTorch layout, float32.

    Defaults are the golden fixture's dimensions; benchmarks/forward.py asks for 0.1B-shaped ones."""
    H = C // N
    n = np.arange(C)
    ddd = n / C
    linear = n / (C - 1) - 0.5
    zz = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zz * np.abs(zz)
    normal = lambda *shape, std: rng.normal(0.0, std, shape)
    jitter = lambda x, s=0.02: x + normal(*np.shape(x), std=s)
    vec = lambda x: np.asarray(x, np.float64).reshape(1, 1, C)

    sd: dict[str, np.ndarray] = {
        "emb.weight": normal(V, C, std=1.0).astype(np.float32),
        "blocks.0.ln0.weight": jitter(np.ones(C), 0.1), "blocks.0.ln0.bias": normal(C, std=0.1),
        "ln_out.weight": jitter(np.ones(C), 0.1), "ln_out.bias": normal(C, std=0.1),
        "head.weight": normal(V, C, std=0.5 / np.sqrt(C) * 4).astype(np.float32),
    }
    for i in range(L):
        p = f"blocks.{i}."
        r01, r10 = i / (L - 1), 1.0 - i / L
        www = -6 + 6 * (n / (C - 1)) ** (1 + r01 ** 0.3)
        t = {
            "ln1.weight": jitter(np.ones(C), 0.1), "ln1.bias": normal(C, std=0.1),
            "ln2.weight": jitter(np.ones(C), 0.1), "ln2.bias": normal(C, std=0.1),
            "att.x_r": vec(jitter(1 - ddd ** (0.2 * r10))), "att.x_w": vec(jitter(1 - ddd ** (0.9 * r10))),
            "att.x_k": vec(jitter(1 - ddd ** (0.7 * r10))), "att.x_v": vec(jitter(1 - ddd ** (0.7 * r10))),
            "att.x_a": vec(jitter(1 - ddd ** (0.9 * r10))), "att.x_g": vec(jitter(1 - ddd ** (0.2 * r10))),
            "att.w0": vec(jitter(www + 0.5 + 2.5 * zigzag, 0.1)),
            "att.w1": normal(C, D_DECAY, std=1 / np.sqrt(C)), "att.w2": normal(D_DECAY, C, std=0.5 / np.sqrt(D_DECAY)),
            "att.a0": vec(jitter(-0.19 + 0.3 * zigzag + 0.4 * linear, 0.1)),
            "att.a1": normal(C, D_AAA, std=1 / np.sqrt(C)), "att.a2": normal(D_AAA, C, std=0.5 / np.sqrt(D_AAA)),
            "att.v0": vec(jitter(0.73 - 0.4 * linear, 0.1)),
            "att.v1": normal(C, D_MV, std=1 / np.sqrt(C)), "att.v2": normal(D_MV, C, std=0.5 / np.sqrt(D_MV)),
            "att.g1": normal(C, D_GATE, std=1 / np.sqrt(C)), "att.g2": normal(D_GATE, C, std=0.5 / np.sqrt(D_GATE)),
            "att.k_k": vec(jitter(0.71 - 0.1 * linear)), "att.k_a": vec(jitter(np.full(C, 1.02))),
            "att.r_k": jitter(np.full((H, N), -0.04), 0.1),
            "att.receptance.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.key.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.value.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.output.weight": normal(C, C, std=0.5 / np.sqrt(C)),
            "att.ln_x.weight": jitter(np.full(C, ((i + 1) / L) ** 0.7), 0.1), "att.ln_x.bias": normal(C, std=0.05),
            "ffn.x_k": vec(jitter(1 - ddd ** (r10 ** 4))),
            "ffn.key.weight": normal(F, C, std=1 / np.sqrt(C)),
            "ffn.value.weight": normal(C, F, std=0.5 / np.sqrt(F)),
        }
        sd.update({p + k: np.asarray(v, np.float32) for k, v in t.items()})  # float32 early: 0.1B is large
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def param_spec(cfg: Architecture, dtype) -> Params:
    """Params as ShapeDtypeStructs: official shapes (rwkvjax/model/params.py), linear weights [in, out], stacked on L."""
    sds = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
    official = expected_shapes(cfg, 1)
    blocks = {}
    for field, (_, transposed) in _BLOCK_NAMES.items():
        shape = official[field][::-1] if transposed else official[field]
        blocks[field] = sds(cfg.n_layer, *shape)
    V, C = cfg.vocab_size, cfg.n_embd
    return Params(emb=sds(V, C), ln0_w=sds(C), ln0_b=sds(C), blocks=Block(**blocks),
                  ln_out_w=sds(C), ln_out_b=sds(C), head=sds(C, V))
