"""Exact chunked WKV-7 in pure JAX (the chunked diagonal-plus-low-rank form of Yang et al. 2024, arXiv:2406.06484): `lax.scan` over chunks, matmuls inside a chunk.

Same signature and semantics as `rwkvjax.model.wkv.wkv7_scan`. Per chunk of length C, with G the inclusive cumulative
log decay, the rows u_t = S_{t-1} a_t solve a unit-lower-triangular system, and outputs and the exiting state are
matmuls of decay-weighted factors. Spans of `chunks_per_checkpoint` chunks are `jax.checkpoint`-ed, so reverse mode
stores only the state entering each span ([T/(C*k), B, H, N, N]) and recomputes the rest: the saved state grows
with T/(C*k), not T.

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
    if T == T_pad:
        return tuple(xs)
    return tuple(jnp.pad(x, ((0, 0), (0, T_pad - T), (0, 0), (0, 0))) for x in xs)


def _unit_lower_solve(L, X):
    """(I - L)^-1 X for strictly lower L: X + L X + L^2 X + ... as log2(C) doublings (exact: L^C = 0).

    Batched triangular_solve is slow on XLA:CPU; this is plain batched matmuls with the same accuracy for
    RWKV-bounded inputs (tests/model/test_wkv.py).
    """
    C = L.shape[-1]
    n = 1
    while n < C:
        X = X + _ein("...ts,...sv->...tv", L, X)
        n *= 2
        if n < C:
            L = _ein("...ts,...sr->...tr", L, L)
    return X


def _chunk_step(S_BHVK, xs):
    """One chunk. xs: r, log_w, k, v, a, b each [B,C,H,N] float32. Returns (S', y [B,C,H,V])."""
    # Heads-major inside the chunk: XLA:CPU runs the batched matmuls far faster with batch dims leading.
    r, lw, k, v, a, b = (x.transpose(0, 2, 1, 3) for x in xs)
    C = r.shape[2]
    G = jnp.cumsum(lw, axis=2)  # inclusive, <= 0
    Ge = G - lw  # exclusive
    g_end = G[:, :, -1:]
    G_mid = G[:, :, C // 2: C // 2 + 1]  # centring keeps intra-chunk exponents small
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
    U = _unit_lower_solve(M_ab, X)
    y = _ein("bhtk,bhvk->bhtv", r_g, S_BHVK) + _ein("bhts,bhsv->bhtv", M_qb, U) + _ein("bhts,bhsv->bhtv", M_qk, v)
    S_new = S_BHVK * e(g_end) + _ein("bhtv,bhtk->bhvk", v, k_e) + _ein("bhtv,bhtk->bhvk", U, b_e)
    return S_new, y.transpose(0, 2, 1, 3)


def _checkpoint_span(S_BHVK, xs):
    """Several chunks between two stored states; reverse mode recomputes them from the entering state."""
    return jax.lax.scan(_chunk_step, S_BHVK, xs)


@functools.partial(jax.jit, static_argnames=("chunk", "chunks_per_checkpoint"))
def wkv7_chunked(r, log_w, k, v, a, b, s0, *, chunk: int = 16, chunks_per_checkpoint: int = 8):
    """Chunked WKV-7: [B,T,H,N] inputs (any float dtype), s0 [B,H,N,N] -> (y [B,T,H,N] f32, s_T f32).

    Reverse mode keeps one state per `chunks_per_checkpoint` chunks (plus one span's intermediates at a time).
    """
    if chunk < 1 or chunks_per_checkpoint < 1:
        raise ValueError(f"wkv7_chunked: chunk and chunks_per_checkpoint must be >= 1, got {chunk}, "
                         f"{chunks_per_checkpoint}")
    B, T, H, N = r.shape
    n_chunks = -(-T // chunk)
    n_spans = -(-n_chunks // chunks_per_checkpoint)
    per_span = -(-n_chunks // n_spans)  # balanced, so padding stays under n_spans chunks
    T_pad = n_spans * per_span * chunk
    xs = pad_time(tuple(x.astype(jnp.float32) for x in (r, log_w, k, v, a, b)), T_pad)
    # [B, T_pad, H, N] -> [spans, chunks, B, C, H, N]. With B == 1 a plain reshape (no copy of the inputs).
    if B == 1:
        to_spans = lambda x: x.reshape(n_spans, per_span, 1, chunk, H, N)
        from_spans = lambda y: y.reshape(1, T_pad, H, N)
    else:
        to_spans = lambda x: jnp.moveaxis(x.reshape(B, n_spans, per_span, chunk, H, N), 0, 2)
        from_spans = lambda y: jnp.moveaxis(y, 2, 0).reshape(B, T_pad, H, N)
    span = jax.checkpoint(_checkpoint_span, prevent_cse=False)
    sT, y = jax.lax.scan(span, s0.astype(jnp.float32), tuple(map(to_spans, xs)))
    y = from_spans(y)
    return y[:, :T], sT
