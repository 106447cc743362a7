"""Per-token WKV-7 loop shaped for XLA:CPU: the fastest exact forward on CPU (score, eval, prefill).

Same signature and semantics as `rwkvjax.model.wkv.wkv7_scan`; differentiable (autodiff of a `lax.scan`, which stores
every state: use `chunked` when gradients are needed). It differs from the reference scan only in how XLA:CPU sees it
(measured in benchmarks/RESULTS.md, "WKV kernels"):

- One `lax.scan` per batch row over that row's [T, H, N] slab. The slab of row b is contiguous in [B, T, H, N], so it
  is time-major without a transpose (the reference scan's `moveaxis` makes XLA:CPU copy all six inputs first). Per
  row the [H, N, N] state is B times smaller than [B, H, N, N]: up to 12 heads of 64 it stays in L2 and under the size
  (~200 KB) above which XLA:CPU splits the state update over threads, a split that costs more than it gains when the
  cores are shared. Rows run one after another under `lax.map`.
- The decay exp(log_w) is taken once for the whole [B, T, H, N] array before the loop (one fused pass; inside the step
  it is one more small kernel launch per token). The other inputs are converted to float32 per step, inside the
  slicing fusions (a no-op for float32 inputs), not in whole-array passes.

The recurrence, its decay and the state are float32 whatever the input dtype; dots use precision HIGHEST.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST
_F32 = jnp.float32


def _row(xs_THN, S_HNN):
    """One batch row: r, w (decay, not its log), k, v, a, b [T, H, N] and S [H, N, N] float32 -> (S_T, y [T, H, N])."""

    def step(S_HVK, x):
        r_HN, w_HN, k_HN, v_HN, a_HN, b_HN = (t.astype(_F32) for t in x)
        sa_HV = jnp.einsum("hvk,hk->hv", S_HVK, a_HN, precision=_HI)
        S_HVK = S_HVK * w_HN[:, None, :] + sa_HV[:, :, None] * b_HN[:, None, :] + v_HN[:, :, None] * k_HN[:, None, :]
        return S_HVK, jnp.einsum("hvk,hk->hv", S_HVK, r_HN, precision=_HI)

    return jax.lax.scan(step, S_HNN, xs_THN)


@jax.jit
def wkv7_loop(r, log_w, k, v, a, b, s0):
    """[B,T,H,N] inputs (any float dtype), s0 [B,H,N,N] -> (y [B,T,H,N] float32, s_T [B,H,N,N] float32)."""
    xs_BTHN = (r, jnp.exp(log_w.astype(_F32)), k, v, a, b)
    S_BHNN = s0.astype(_F32)
    if r.shape[0] == 1:  # no row loop: x[0] is a free reshape
        sT_HNN, y_THN = _row(tuple(x[0] for x in xs_BTHN), S_BHNN[0])
        return y_THN[None], sT_HNN[None]
    sT_BHNN, y_BTHN = jax.lax.map(lambda row: _row(*row), (xs_BTHN, S_BHNN))
    return y_BTHN, sT_BHNN
