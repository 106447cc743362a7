"""WKV-7: realistic random inputs and a float64 per-token reference with its VJP (the ground truth of
tests/model/test_wkv*.py and benchmarks/peers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

INPUT_NAMES = ("r", "log_w", "k", "v", "a", "b", "s0")


def rwkv_inputs(seed, B, T, H, N, *, dtype=jnp.float32, s0="random"):
    """RWKV-7-like inputs: log_w = -e^-0.5 sigmoid(x), a = -kk, b = kk*iclr with kk L2-normalised per head."""
    rng = np.random.default_rng(seed)
    normal = lambda scale=1.0: rng.standard_normal((B, T, H, N)) * scale
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
    kk = normal()
    kk /= np.linalg.norm(kk, axis=-1, keepdims=True)
    iclr = sigmoid(normal())
    s0_BHNN = rng.standard_normal((B, H, N, N)) * 0.5 if s0 == "random" else np.zeros((B, H, N, N))
    seq = [normal(), -np.exp(-0.5) * sigmoid(normal(2.0)), normal(), normal(), -kk, kk * iclr]
    return tuple(jnp.asarray(x, dtype) for x in seq) + (jnp.asarray(s0_BHNN, jnp.float32),)


def reference_f64(xs, cot_y, cot_sT):
    """Per-token recurrence in float64: returns (y, s_T, grads of <y, cot_y> + <s_T, cot_sT> w.r.t. xs)."""
    with jax.enable_x64(True):
        xs64 = [jnp.asarray(np.asarray(x, np.float64)) for x in xs]

        def run(r, log_w, k, v, a, b, s0):
            def step(S, x):
                r_t, lw_t, k_t, v_t, a_t, b_t = x
                sa = jnp.einsum("bhvk,bhk->bhv", S, a_t)
                S = S * jnp.exp(lw_t)[:, :, None, :] + sa[..., None] * b_t[:, :, None, :] + v_t[..., None] * k_t[:, :, None, :]
                return S, jnp.einsum("bhvk,bhk->bhv", S, r_t)

            time_major = tuple(jnp.moveaxis(x, 1, 0) for x in (r, log_w, k, v, a, b))
            sT, y = jax.lax.scan(step, s0, time_major)
            return jnp.moveaxis(y, 0, 1), sT

        @jax.jit
        def go(xs, cot_y, cot_sT):
            out, vjp = jax.vjp(run, *xs)
            return out, vjp((cot_y, cot_sT))

        cots = tuple(jnp.asarray(np.asarray(c, np.float64)) for c in (cot_y, cot_sT))
        (y, sT), grads = go(xs64, *cots)
        return np.asarray(y), np.asarray(sT), [np.asarray(g) for g in grads]


def rel_err(got, ref):
    """max |got - ref| / max |ref| (float64)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
