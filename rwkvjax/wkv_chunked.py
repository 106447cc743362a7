"""Exact chunked WKV-7 in pure JAX (KERNELS.md §3): `lax.scan` over chunks, matmuls inside a chunk.

Same signature and semantics as `rwkvjax.wkv.wkv7_scan`. Per chunk of length C, with G the inclusive cumulative
log decay, the rows u_t = S_{t-1} a_t solve a unit-lower-triangular system, and outputs and the exiting state are
matmuls of decay-weighted factors. The chunk body is `jax.checkpoint`-ed, so reverse mode stores only the state
entering each chunk ([T/C, B, H, N, N]) and recomputes the rest: training memory grows with T/C, not T.

Numerics: exponents are centred on the mid-chunk row, so the exact form holds while C/2 * max|log_w| stays well
below the float32 exponent range (~87); RWKV-7's decay bound |log_w| < 0.6065 allows C up to ~128.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST


def _ein(spec, *xs):
    return jnp.einsum(spec, *xs, precision=_HI, preferred_element_type=jnp.float32)


def pad_time(xs, T_pad):
    """Pad [B,T,H,N] inputs to T_pad with identity steps (log_w = 0 means decay 1; zero k, v, a, b add nothing)."""
    T = xs[0].shape[1]
    return tuple(jnp.pad(x, ((0, 0), (0, T_pad - T), (0, 0), (0, 0))) for x in xs)


def _chunk_step(S_BHVK, xs):
    """One chunk. xs: r, log_w, k, v, a, b each [B,H,C,N] float32. Returns (S', y [B,H,C,V])."""
    r, lw, k, v, a, b = xs
    C = r.shape[-2]
    G = jnp.cumsum(lw, axis=-2)  # inclusive, <= 0
    Ge = G - lw  # exclusive
    g_end = G[..., -1:, :]
    G_mid = G[..., C // 2: C // 2 + 1, :]  # centring keeps intra-chunk exponents small
    e = jnp.exp
    r_g, a_g = r * e(G), a * e(Ge)  # touch the entering state: bounded by the inputs
    r_c, a_c = r * e(G - G_mid), a * e(Ge - G_mid)
    k_c, b_c = k * e(G_mid - G), b * e(G_mid - G)
    k_e, b_e = k * e(g_end - G), b * e(g_end - G)

    strict = jnp.tril(jnp.ones((C, C), jnp.float32), -1)
    incl = jnp.tril(jnp.ones((C, C), jnp.float32))
    M_ab = _ein("bhtn,bhsn->bhts", a_c, b_c) * strict
    M_ak = _ein("bhtn,bhsn->bhts", a_c, k_c) * strict
    M_qb = _ein("bhtn,bhsn->bhts", r_c, b_c) * incl
    M_qk = _ein("bhtn,bhsn->bhts", r_c, k_c) * incl

    X = _ein("bhtk,bhvk->bhtv", a_g, S_BHVK) + _ein("bhts,bhsv->bhtv", M_ak, v)
    eye = jnp.eye(C, dtype=jnp.float32)
    U = jax.lax.linalg.triangular_solve(eye - M_ab, X, left_side=True, lower=True, unit_diagonal=True)
    y = _ein("bhtk,bhvk->bhtv", r_g, S_BHVK) + _ein("bhts,bhsv->bhtv", M_qb, U) + _ein("bhts,bhsv->bhtv", M_qk, v)
    S_new = S_BHVK * e(g_end) + _ein("bhtv,bhtk->bhvk", v, k_e) + _ein("bhtv,bhtk->bhvk", U, b_e)
    return S_new, y


@functools.partial(jax.jit, static_argnames=("chunk",))
def wkv7_chunked(r, log_w, k, v, a, b, s0, *, chunk: int = 16):
    """Chunked WKV-7: [B,T,H,N] inputs (any float dtype), s0 [B,H,N,N] -> (y [B,T,H,N] f32, s_T f32)."""
    if chunk < 1:
        raise ValueError(f"wkv7_chunked: chunk must be >= 1, got {chunk}")
    B, T, H, N = r.shape
    n_chunks = -(-T // chunk)
    xs = pad_time(tuple(x.astype(jnp.float32) for x in (r, log_w, k, v, a, b)), n_chunks * chunk)
    # [B, nC*C, H, N] -> [nC, B, H, C, N]
    to_chunks = lambda x: x.reshape(B, n_chunks, chunk, H, N).transpose(1, 0, 3, 2, 4)
    body = jax.checkpoint(_chunk_step, prevent_cse=False)
    sT, y = jax.lax.scan(body, s0.astype(jnp.float32), tuple(map(to_chunks, xs)))
    y = y.transpose(1, 0, 3, 2, 4).reshape(B, n_chunks * chunk, H, N)
    return y[:, :T], sT
