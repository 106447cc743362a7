"""WKV-7 forward and backward Pallas kernels (chunked DPLR form) with a custom VJP that returns d(S0).

    y, s_T = wkv7(r, log_w, k, v, a, b, s0, *, chunk=16, interpret=False)

Per head, official orientation S[value, key]:
    S_t = S_{t-1} diag(exp(log_w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T,    y_t = S_t r_t
r, log_w, k, v, a, b: [B,T,H,N] (bf16 or fp32); s0, s_T: [B,H,N,N] float32; y float32. All arithmetic is float32.

One program per (batch, head) walks the chunks with `fori_loop`; inside a chunk everything is 2-D matmuls
(Yang et al. 2024, arXiv:2406.06484), with (I - A_ab)^-1 as an exact Neumann product (A_ab is strictly lower, so nilpotent).
The forward stores the state entering every chunk; the backward walks chunks in reverse, recomputes each chunk's
intermediates from that state (no division by the decay) and carries d(state) down to d(S0).
Kernel bodies use only ref loads/stores with `pl.ds`, `fori_loop`, 2-D dots with explicit precision, masks from
iota and reductions — no value slicing — so they lower with Pallas-Triton as well as run under `interpret=True`.
Exponents are centred on the mid-chunk row: exact while chunk/2 * max|log_w| stays well below ~87.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

_F32 = jnp.float32
_HI = jax.lax.Precision.HIGHEST


def _dot(x, y, tx=False, ty=False):
    """2-D x @ y with optional transposes, IEEE float32 (HIGHEST keeps Triton off TF32)."""
    dims = (((0 if tx else 1,), (1 if ty else 0,)), ((), ()))
    return jax.lax.dot_general(x, y, dims, precision=_HI, preferred_element_type=_F32)


def _masks(C, N):
    row_CC = jax.lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col_CC = jax.lax.broadcasted_iota(jnp.int32, (C, C), 1)
    row_CN = jax.lax.broadcasted_iota(jnp.int32, (C, N), 0)
    one, zero = jnp.ones((C, C), _F32), jnp.zeros((C, C), _F32)
    return dict(
        strict=jnp.where(row_CC > col_CC, one, zero),
        incl=jnp.where(row_CC >= col_CC, one, zero),
        eye=jnp.where(row_CC == col_CC, one, zero),
        upper_incl=jnp.where(row_CC <= col_CC, one, zero),  # reverse cumsum as a matmul
        mid_rows=row_CN <= C // 2,
    )


def _chunk_forward(S, r, lw, k, v, a, b, masks):
    """Everything a chunk needs, from the entering state S [V,K] and [C,N] float32 inputs."""
    C = r.shape[0]
    G = jnp.cumsum(lw, axis=0)
    Ge = G - lw
    g_end = jnp.sum(lw, axis=0, keepdims=True)  # last row of G, without slicing a value
    G_mid = jnp.sum(jnp.where(masks["mid_rows"], lw, 0.0), axis=0, keepdims=True)
    e = jnp.exp
    f = dict(G=G, Ge=Ge, g_end=g_end, G_mid=G_mid,
             r_g=r * e(G), a_g=a * e(Ge), r_c=r * e(G - G_mid), a_c=a * e(Ge - G_mid),
             k_c=k * e(G_mid - G), b_c=b * e(G_mid - G), k_e=k * e(g_end - G), b_e=b * e(g_end - G))
    f["M_ab"] = _dot(f["a_c"], f["b_c"], ty=True) * masks["strict"]
    f["M_ak"] = _dot(f["a_c"], f["k_c"], ty=True) * masks["strict"]
    f["M_qb"] = _dot(f["r_c"], f["b_c"], ty=True) * masks["incl"]
    f["M_qk"] = _dot(f["r_c"], f["k_c"], ty=True) * masks["incl"]
    # (I - L)^-1 = (I + L)(I + L^2)(I + L^4)...: exact once the powers reach L^C = 0.
    P, L_pow, n = masks["eye"] + f["M_ab"], f["M_ab"], 2
    while n < C:
        L_pow = _dot(L_pow, L_pow)
        P = P + _dot(P, L_pow)
        n *= 2
    f["P"] = P
    X = _dot(f["a_g"], S, ty=True) + _dot(f["M_ak"], v)
    f["U"] = _dot(P, X)  # row t = (S_{t-1} a_t)^T
    return f


def _chunk_output(S, v, f):
    y = _dot(f["r_g"], S, ty=True) + _dot(f["M_qb"], f["U"]) + _dot(f["M_qk"], v)
    S_new = S * jnp.exp(f["g_end"]) + _dot(v, f["k_e"], tx=True) + _dot(f["U"], f["b_e"], tx=True)
    return y, S_new


def _chunk_backward(S, v, f, dy, dS_new, masks):
    """Reverse mode of `_chunk_forward` + `_chunk_output` in closed form. Returns input grads and d(S)."""
    e = jnp.exp
    U, P = f["U"], f["P"]
    eg = e(f["g_end"])
    # S' = S*e^g + v^T k_e + U^T b_e
    dS = dS_new * eg
    dg = jnp.sum(dS_new * S, axis=0, keepdims=True) * eg
    dv = _dot(f["k_e"], dS_new, ty=True)
    dk_e = _dot(v, dS_new)
    dU = _dot(f["b_e"], dS_new, ty=True)
    db_e = _dot(U, dS_new)
    # y = r_g S^T + M_qb U + M_qk v
    dr_g = _dot(dy, S)
    dS = dS + _dot(dy, f["r_g"], tx=True)
    dM_qb = _dot(dy, U, ty=True) * masks["incl"]
    dU = dU + _dot(f["M_qb"], dy, tx=True)
    dM_qk = _dot(dy, v, ty=True) * masks["incl"]
    dv = dv + _dot(f["M_qk"], dy, tx=True)
    # U = P X with P = (I - M_ab)^-1
    dX = _dot(P, dU, tx=True)
    dM_ab = _dot(dX, U, ty=True) * masks["strict"]
    # X = a_g S^T + M_ak v
    da_g = _dot(dX, S)
    dS = dS + _dot(dX, f["a_g"], tx=True)
    dM_ak = _dot(dX, v, ty=True) * masks["strict"]
    dv = dv + _dot(f["M_ak"], dX, tx=True)
    # M = mask * (x y^T)
    da_c = _dot(dM_ab, f["b_c"]) + _dot(dM_ak, f["k_c"])
    db_c = _dot(dM_ab, f["a_c"], tx=True) + _dot(dM_qb, f["r_c"], tx=True)
    dk_c = _dot(dM_ak, f["a_c"], tx=True) + _dot(dM_qk, f["r_c"], tx=True)
    dr_c = _dot(dM_qb, f["b_c"]) + _dot(dM_qk, f["k_c"])
    # Factors -> raw inputs. G_mid cancels in every product, so it carries no gradient.
    G, Ge, G_mid, g_end = f["G"], f["Ge"], f["G_mid"], f["g_end"]
    dr = dr_g * e(G) + dr_c * e(G - G_mid)
    da = da_g * e(Ge) + da_c * e(Ge - G_mid)
    dk = dk_c * e(G_mid - G) + dk_e * e(g_end - G)
    db = db_c * e(G_mid - G) + db_e * e(g_end - G)
    dG = (dr_g * f["r_g"] + dr_c * f["r_c"] - dk_c * f["k_c"] - db_c * f["b_c"]
          - dk_e * f["k_e"] - db_e * f["b_e"])
    dGe = da_g * f["a_g"] + da_c * f["a_c"]
    dg = dg + jnp.sum(dk_e * f["k_e"] + db_e * f["b_e"], axis=0, keepdims=True)
    # G = cumsum(lw), Ge = G - lw, g_end = sum(lw)
    dlw = _dot(masks["upper_incl"], dG + dGe) - dGe + dg
    return (dr, dlw, dk, dv, da, db), dS


def _fwd_kernel(r_ref, lw_ref, k_ref, v_ref, a_ref, b_ref, s0_ref, y_ref, sT_ref, st_ref, *, chunk, n_chunks):
    N = r_ref.shape[-1]
    masks = _masks(chunk, N)

    def body(c, S):
        rows = pl.ds(pl.multiple_of(c * chunk, chunk), chunk)
        r, lw, k, v, a, b = (ref[rows, :].astype(_F32) for ref in (r_ref, lw_ref, k_ref, v_ref, a_ref, b_ref))
        st_ref[pl.ds(pl.multiple_of(c * N, N), N), :] = S
        f = _chunk_forward(S, r, lw, k, v, a, b, masks)
        y, S_new = _chunk_output(S, v, f)
        y_ref[rows, :] = y.astype(y_ref.dtype)
        return S_new

    sT_ref[...] = jax.lax.fori_loop(0, n_chunks, body, s0_ref[...].astype(_F32))


def _bwd_kernel(r_ref, lw_ref, k_ref, v_ref, a_ref, b_ref, st_ref, dy_ref, dsT_ref,
                dr_ref, dlw_ref, dk_ref, dv_ref, da_ref, db_ref, ds0_ref, *, chunk, n_chunks):
    N = r_ref.shape[-1]
    masks = _masks(chunk, N)
    in_refs = (r_ref, lw_ref, k_ref, v_ref, a_ref, b_ref)
    out_refs = (dr_ref, dlw_ref, dk_ref, dv_ref, da_ref, db_ref)

    def body(i, dS_new):
        c = n_chunks - 1 - i
        rows = pl.ds(pl.multiple_of(c * chunk, chunk), chunk)
        r, lw, k, v, a, b = (ref[rows, :].astype(_F32) for ref in in_refs)
        S = st_ref[pl.ds(pl.multiple_of(c * N, N), N), :]
        f = _chunk_forward(S, r, lw, k, v, a, b, masks)
        grads, dS = _chunk_backward(S, v, f, dy_ref[rows, :].astype(_F32), dS_new, masks)
        for ref, g in zip(out_refs, grads):
            ref[rows, :] = g.astype(ref.dtype)
        return dS

    ds0_ref[...] = jax.lax.fori_loop(0, n_chunks, body, dsT_ref[...].astype(_F32))


def _specs(B, T, H, N, n_chunks):
    seq = pl.BlockSpec((None, T, None, N), lambda b, h: (b, 0, h, 0))
    mat = pl.BlockSpec((None, None, N, N), lambda b, h: (b, h, 0, 0))
    states = pl.BlockSpec((None, None, n_chunks * N, N), lambda b, h: (b, h, 0, 0))
    return seq, mat, states


def _compiler_params(interpret):
    # Forces the Triton lowering on GPU (the default GPU lowering is Mosaic GPU since jax 0.9); ignored when interpreting.
    return None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=1)


def _fwd_call(r, lw, k, v, a, b, s0, chunk, interpret):
    B, T, H, N = r.shape
    n_chunks = T // chunk
    seq, mat, states = _specs(B, T, H, N, n_chunks)
    kernel = functools.partial(_fwd_kernel, chunk=chunk, n_chunks=n_chunks)
    return pl.pallas_call(
        kernel,
        grid=(B, H),
        in_specs=[seq] * 6 + [mat],
        out_specs=[seq, mat, states],
        out_shape=[jax.ShapeDtypeStruct((B, T, H, N), _F32), jax.ShapeDtypeStruct((B, H, N, N), _F32),
                   jax.ShapeDtypeStruct((B, H, n_chunks * N, N), _F32)],
        interpret=interpret,
        compiler_params=_compiler_params(interpret),
        name="wkv7_fwd",
    )(r, lw, k, v, a, b, s0)


def _bwd_call(r, lw, k, v, a, b, st, dy, dsT, chunk, interpret):
    B, T, H, N = r.shape
    n_chunks = T // chunk
    seq, mat, states = _specs(B, T, H, N, n_chunks)
    kernel = functools.partial(_bwd_kernel, chunk=chunk, n_chunks=n_chunks)
    return pl.pallas_call(
        kernel,
        grid=(B, H),
        in_specs=[seq] * 6 + [states, seq, mat],
        out_specs=[seq] * 6 + [mat],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (r, lw, k, v, a, b)]
        + [jax.ShapeDtypeStruct((B, H, N, N), _F32)],
        interpret=interpret,
        compiler_params=_compiler_params(interpret),
        name="wkv7_bwd",
    )(r, lw, k, v, a, b, st, dy, dsT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _wkv7_padded(r, lw, k, v, a, b, s0, chunk, interpret):
    y, sT, _ = _fwd_call(r, lw, k, v, a, b, s0, chunk, interpret)
    return y, sT


def _wkv7_padded_fwd(r, lw, k, v, a, b, s0, chunk, interpret):
    y, sT, st = _fwd_call(r, lw, k, v, a, b, s0, chunk, interpret)
    return (y, sT), (r, lw, k, v, a, b, st)


def _wkv7_padded_bwd(chunk, interpret, res, cts):
    r, lw, k, v, a, b, st = res
    dy, dsT = cts
    return tuple(_bwd_call(r, lw, k, v, a, b, st, dy.astype(_F32), dsT.astype(_F32), chunk, interpret))


_wkv7_padded.defvjp(_wkv7_padded_fwd, _wkv7_padded_bwd)


@functools.partial(jax.jit, static_argnames=("chunk", "interpret"))
def wkv7(r, log_w, k, v, a, b, s0, *, chunk: int = 16, interpret: bool = False):
    """WKV-7 via Pallas: [B,T,H,N] inputs, s0 [B,H,N,N] -> (y [B,T,H,N] float32, s_T [B,H,N,N] float32).

    Differentiable in every argument (custom VJP; cotangents on both y and s_T are accepted). Any T >= 1:
    T is padded to a multiple of `chunk` with identity steps. `chunk` must be a power of two (>= 16 to lower
    with Triton, whose dots need dims >= 16).
    """
    if r.ndim != 4:
        raise ValueError(f"pallas wkv7: r must be [B,T,H,N], got shape {r.shape}")
    B, T, H, N = r.shape
    for name, x in (("log_w", log_w), ("k", k), ("v", v), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise ValueError(f"pallas wkv7: {name} has shape {x.shape}, expected {r.shape} like r")
    if s0.shape != (B, H, N, N):
        raise ValueError(f"pallas wkv7: s0 has shape {s0.shape}, expected {(B, H, N, N)}")
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"pallas wkv7: chunk must be a power of two, got {chunk}")
    T_pad = -(-T // chunk) * chunk
    pad = lambda x: jnp.pad(x, ((0, 0), (0, T_pad - T), (0, 0), (0, 0)))
    lw = log_w.astype(_F32)  # the decay is always float32
    y, sT = _wkv7_padded(pad(r), pad(lw), pad(k), pad(v), pad(a), pad(b), s0.astype(_F32), chunk, interpret)
    return y[:, :T], sT
