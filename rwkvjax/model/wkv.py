"""The one dispatch point for the WKV-7 recurrence, and its per-token reference.

All implementations share one signature:

    y_BTHN, sT_BHNN = wkv7(r, log_w, k, v, a, b, s0, ...)

for the diagonal-plus-rank-1 recurrence (per head, official orientation S[value, key])

    S_t = S_{t-1} diag(exp(log_w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T,    y_t = S_t r_t

with r, log_w, k, v, a, b of shape [B,T,H,N] (any float dtype) and s0, sT float32 [B,H,N,N].
State and arithmetic are float32 whatever the input dtype.
"""

from __future__ import annotations

import enum
import functools
import logging

import jax
import jax.numpy as jnp

from rwkvjax.errors import ConfigError
from rwkvjax.model.wkv_chunked import wkv7_chunked
from rwkvjax.model.wkv_loop import wkv7_loop
from rwkvjax.options import WKV_IMPLS

log = logging.getLogger(__name__)
_HI = jax.lax.Precision.HIGHEST

# One member per name in `rwkvjax.options.WKV_IMPLS` (AUTO = "auto", LOOP_CHUNKED = "loop_chunked", ...), where
# each is described: the CLI offers the same names without importing jax.
WkvImpl = enum.Enum("WkvImpl", [(name.upper(), name) for name in WKV_IMPLS], module=__name__)

# What AUTO runs on a GPU: the first of these that imports and compiles there. The Pallas kernel lowers through
# Pallas-Triton, which upstream deprecates and which a jax upgrade or another GPU can break; the pure-JAX chunked
# form always compiles, so a run goes on (slower) instead of failing.
_AUTO_GPU = (WkvImpl.PALLAS, WkvImpl.CHUNKED)


def _backend() -> str:
    return jax.default_backend()


def _compile_probe(impl: WkvImpl) -> None:
    """Import `impl` and compile its forward and backward on a small input; raises whatever stops it."""
    B, T, H, N = 1, 32, 1, 64  # 64: the head size of every RWKV-7 release
    x = jax.ShapeDtypeStruct((B, T, H, N), jnp.float32)
    s0 = jax.ShapeDtypeStruct((B, H, N, N), jnp.float32)

    def loss(*xs):
        y, sT = wkv7(*xs, impl=impl)
        return jnp.sum(y) + jnp.sum(sT)

    jax.jit(jax.grad(loss, argnums=tuple(range(7)))).lower(x, x, x, x, x, x, s0).compile()


@functools.cache
def _auto_on_gpu() -> WkvImpl:
    """The first of `_AUTO_GPU` that compiles here (probed once per process); one warning line when the first
    choice does not."""
    failed = []
    for impl in _AUTO_GPU[:-1]:
        try:
            _compile_probe(impl)
        except Exception as e:  # an optional backend: any import or lowering failure means "not here"
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failed.append(f"{impl.value} ({type(e).__name__}: {first[:200]})")
            continue
        break
    else:
        impl = _AUTO_GPU[-1]
    if failed:
        log.warning("WKV: %s does not run on this GPU; using %r (choose one with --wkv-impl)",
                    ", ".join(failed), impl.value)
    return impl


def resolve(impl: WkvImpl | str) -> WkvImpl:
    """Map AUTO (or a name) to a concrete implementation for the default backend.

    On CPU, AUTO is LOOP_CHUNKED: measured (benchmarks/RESULTS.md, "WKV kernels"), the per-token loop is the fastest
    forward (score, eval, prefill) and the chunked form the fastest forward+backward (training, state tuning), and
    LOOP_CHUNKED runs whichever applies, so every caller gets the fastest without naming it. On a GPU, AUTO is the
    Pallas kernel if it compiles there, else CHUNKED (`_AUTO_GPU`).
    """
    try:
        impl = WkvImpl(impl)
    except ValueError:
        names = ", ".join(m.value for m in WkvImpl)
        raise ConfigError(f"unknown WKV implementation {impl!r}; choose one of: {names}") from None
    if impl is WkvImpl.AUTO:
        return _auto_on_gpu() if _backend() == "gpu" else WkvImpl.LOOP_CHUNKED
    return impl


def wkv7_step(r, log_w, k, v, a, b, S):
    """One token: inputs [B,H,N], S [B,H,N,N] float32 -> (y [B,H,N], S')."""
    f32 = lambda x: x.astype(jnp.float32)
    r, w, k, v, a, b = f32(r), jnp.exp(f32(log_w)), f32(k), f32(v), f32(a), f32(b)
    sa = jnp.einsum("bhvk,bhk->bhv", S, a, precision=_HI)
    S = S * w[:, :, None, :] + sa[..., :, None] * b[:, :, None, :] + v[..., :, None] * k[:, :, None, :]
    y = jnp.einsum("bhvk,bhk->bhv", S, r, precision=_HI)
    return y, S


def wkv7_scan(r, log_w, k, v, a, b, s0):
    """Reference: a `lax.scan` over tokens (ground truth for every other implementation)."""
    to_T = lambda x: jnp.moveaxis(x, 1, 0)

    def step(S, xs):
        y, S = wkv7_step(*xs, S)
        return S, y

    sT, y = jax.lax.scan(step, s0.astype(jnp.float32), tuple(map(to_T, (r, log_w, k, v, a, b))))
    return jnp.moveaxis(y, 0, 1), sT


@jax.custom_vjp
def wkv7_loop_chunked(r, log_w, k, v, a, b, s0):
    """The loop's forward; under differentiation the chunked form's forward and VJP instead (same cost as `chunked`)."""
    return wkv7_loop(r, log_w, k, v, a, b, s0)


def _loop_chunked_fwd(*xs):
    return jax.vjp(wkv7_chunked, *xs)  # outputs, and the VJP closure (span states + inputs) as residuals


def _loop_chunked_bwd(vjp_fn, cot):
    return vjp_fn(cot)


wkv7_loop_chunked.defvjp(_loop_chunked_fwd, _loop_chunked_bwd)


def wkv7(r, log_w, k, v, a, b, s0, *, impl: WkvImpl | str = WkvImpl.AUTO):
    """Dispatch. T == 1 always takes the single-step path (decode)."""
    impl = resolve(impl)
    if r.shape[1] == 1:
        y, sT = wkv7_step(r[:, 0], log_w[:, 0], k[:, 0], v[:, 0], a[:, 0], b[:, 0], s0.astype(jnp.float32))
        return y[:, None], sT
    match impl:
        case WkvImpl.SCAN:
            return wkv7_scan(r, log_w, k, v, a, b, s0)
        case WkvImpl.CHUNKED:
            return wkv7_chunked(r, log_w, k, v, a, b, s0)
        case WkvImpl.LOOP:
            return wkv7_loop(r, log_w, k, v, a, b, s0)
        case WkvImpl.LOOP_CHUNKED:
            return wkv7_loop_chunked(r, log_w, k, v, a, b, s0)
        case WkvImpl.PALLAS | WkvImpl.PALLAS_INTERPRET:
            if impl is WkvImpl.PALLAS and _backend() != "gpu":
                raise ConfigError(f"WKV impl 'pallas' compiles for a GPU, but the backend is {_backend()!r}; "
                                 "use 'pallas_interpret' (slow) or 'chunked' here")
            from pallas_kernels.wkv7 import wkv7 as wkv7_pallas  # lazy: Pallas imports are heavy
            return wkv7_pallas(r, log_w, k, v, a, b, s0, interpret=impl is WkvImpl.PALLAS_INTERPRET)
    raise AssertionError(f"unhandled WKV implementation {impl}")
