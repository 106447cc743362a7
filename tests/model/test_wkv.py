"""WKV-7 implementations against a float64 per-token reference: outputs, final state, every gradient.

One shared base test, parametrized over implementations (scan, loop, chunked, loop_chunked, Pallas under
interpret=True); loop_chunked runs the loop when not differentiated (the dispatcher test checks it) and the chunked
form under `jax.vjp` (the shared test). Relative error = max|got - ref| / max|ref|. Bars: float32 arrays 1e-5
(outputs) / 1e-4 (gradients); arrays returned in bf16 (gradients of bf16 inputs) 5e-3. The reference sees exactly the
(possibly bf16-rounded) inputs the implementation sees.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.common.wkv_reference import INPUT_NAMES, reference_f64, rel_err, rwkv_inputs
from pallas_kernels.wkv7 import wkv7 as wkv7_pallas
from rwkvjax.model.wkv import WkvImpl, resolve, wkv7, wkv7_loop_chunked, wkv7_scan
from rwkvjax.model.wkv_chunked import wkv7_chunked
from rwkvjax.model.wkv_loop import wkv7_loop

IMPLS = {
    "scan": wkv7_scan,
    "loop": wkv7_loop,
    "chunked": wkv7_chunked,
    "loop_chunked": wkv7_loop_chunked,
    "pallas_interpret": functools.partial(wkv7_pallas, interpret=True),
}
F32, BF16 = jnp.float32, jnp.bfloat16

# (B, T, H, N, s0, dtype). Interpret-mode Pallas is slow: by default it runs the cases in PALLAS_DEFAULT.
CASES = (
    [(2, 1, 1, 8, "random", F32), (2, 7, 3, 8, "random", F32), (2, 16, 1, 8, "random", F32),
     (2, 100, 1, 8, "random", F32), (2, 100, 3, 8, "random", F32), (2, 257, 3, 8, "random", F32)]
    + [(1, 7, 3, 8, "zero", F32), (1, 100, 1, 8, "zero", F32)]
    + [(1, 16, 1, 64, "random", F32), (1, 100, 3, 64, "random", F32), (1, 257, 1, 64, "zero", F32)]
    + [(2, 7, 1, 8, "random", BF16), (1, 100, 3, 64, "random", BF16)]
)
PALLAS_DEFAULT = {(2, 1, 1, 8, "random", F32), (2, 7, 3, 8, "random", F32), (1, 7, 3, 8, "zero", F32),
                  (1, 16, 1, 64, "random", F32), (2, 7, 1, 8, "random", BF16)}


def _case_id(case):
    B, T, H, N, s0, dtype = case
    return f"B{B}-T{T}-H{H}-N{N}-s0{s0}-{jnp.dtype(dtype).name}"


def _params():
    for name in IMPLS:
        for case in CASES:
            slow = name == "pallas_interpret" and case not in PALLAS_DEFAULT
            yield pytest.param(name, case, id=f"{name}-{_case_id(case)}", marks=[pytest.mark.slow] if slow else [])


@functools.lru_cache(maxsize=None)
def _reference(case):
    """Inputs, cotangents and the float64 reference for a case (shared by all implementations)."""
    B, T, H, N, s0, dtype = case
    # seeded from the case's id, so a failure reproduces from its test id (hash() of a str changes per process)
    xs = rwkv_inputs(zlib.crc32(_case_id(case).encode()), B, T, H, N, dtype=dtype, s0=s0)
    rng = np.random.default_rng(7)
    cot_y = jnp.asarray(rng.standard_normal((B, T, H, N)), F32)
    cot_sT = jnp.asarray(rng.standard_normal((B, H, N, N)), F32)
    return xs, cot_y, cot_sT, reference_f64(xs, cot_y, cot_sT)


def _outputs_and_grads(f, xs, cot_y, cot_sT):
    """((y, s_T), grads of <y, cot_y> + <s_T, cot_sT>) in one compiled call."""

    def go(xs, cot_y, cot_sT):
        out, vjp = jax.vjp(f, *xs)
        return out, vjp((cot_y, cot_sT))

    return jax.jit(go)(xs, cot_y, cot_sT)


def _bar(x, grad):
    if x.dtype == BF16:
        return 5e-3
    return 1e-4 if grad else 1e-5


def _check(got, ref, name, grad):
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    assert np.all(np.isfinite(np.asarray(got, np.float64))), f"{name}: non-finite values"
    err = rel_err(got, ref)
    assert err <= _bar(got, grad), f"{name}: relative error {err:.2e} > {_bar(got, grad):.0e}"


@pytest.mark.parametrize("impl,case", list(_params()))
def test_matches_float64_reference(impl, case):
    xs, cot_y, cot_sT, (y_ref, sT_ref, grads_ref) = _reference(case)
    (y, sT), grads = _outputs_and_grads(IMPLS[impl], xs, cot_y, cot_sT)
    assert y.dtype == F32 and sT.dtype == F32
    _check(y, y_ref, "y", grad=False)
    _check(sT, sT_ref, "s_T", grad=False)
    for name, x, g, g_ref in zip(INPUT_NAMES, xs, grads, grads_ref):
        assert g.dtype == x.dtype, f"d{name} dtype {g.dtype} != input dtype {x.dtype}"
        _check(g, g_ref, f"d{name}", grad=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_through_final_state_only(impl):
    """State tuning chains chunks: a cotangent on s_T alone must reach every input, S0 included."""
    B, T, H, N = 1, 23, 2, 8
    xs = rwkv_inputs(3, B, T, H, N)
    cot_y = jnp.zeros((B, T, H, N), F32)
    cot_sT = jnp.asarray(np.random.default_rng(4).standard_normal((B, H, N, N)), F32)
    _, _, grads_ref = reference_f64(xs, cot_y, cot_sT)
    _, grads = _outputs_and_grads(IMPLS[impl], xs, cot_y, cot_sT)
    for name, g, g_ref in zip(INPUT_NAMES, grads, grads_ref):
        _check(g, g_ref, f"d{name}", grad=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_two_calls_with_state_handover_equal_one_call(impl):
    B, T, H, N, split = 1, 41, 2, 8, 18  # split inside a chunk, both parts padded
    xs = rwkv_inputs(5, B, T, H, N)
    rng = np.random.default_rng(6)
    cot_y = jnp.asarray(rng.standard_normal((B, T, H, N)), F32)
    cot_sT = jnp.asarray(rng.standard_normal((B, H, N, N)), F32)
    f = IMPLS[impl]

    def two_calls(r, log_w, k, v, a, b, s0):
        seq = (r, log_w, k, v, a, b)
        y1, s_mid = f(*(x[:, :split] for x in seq), s0)
        y2, sT = f(*(x[:, split:] for x in seq), s_mid)
        return jnp.concatenate([y1, y2], axis=1), sT

    (y1, s1), grads1 = _outputs_and_grads(f, xs, cot_y, cot_sT)
    (y2, s2), grads2 = _outputs_and_grads(two_calls, xs, cot_y, cot_sT)
    _check(y2, y1, "y", grad=False)
    _check(s2, s1, "s_T", grad=False)
    for name, g2, g1 in zip(INPUT_NAMES, grads2, grads1):
        _check(g2, g1, f"d{name}", grad=True)


@pytest.mark.parametrize("chunk", [1, 64])
def test_chunked_other_chunk_sizes(chunk):
    case = (1, 100, 1, 64, "random", F32)
    xs, cot_y, cot_sT, (y_ref, sT_ref, grads_ref) = _reference(case)
    (y, sT), grads = _outputs_and_grads(functools.partial(wkv7_chunked, chunk=chunk), xs, cot_y, cot_sT)
    _check(y, y_ref, "y", grad=False)
    _check(sT, sT_ref, "s_T", grad=False)
    for name, g, g_ref in zip(INPUT_NAMES, grads, grads_ref):
        _check(g, g_ref, f"d{name}", grad=True)


def test_dispatcher_routes_every_impl_and_decode():
    xs = rwkv_inputs(8, 1, 9, 2, 8)
    y_ref, sT_ref, _ = reference_f64(xs, jnp.zeros((1, 9, 2, 8)), jnp.zeros((1, 2, 8, 8)))
    for impl in ("auto", WkvImpl.SCAN, "loop", "chunked", "loop_chunked", "pallas_interpret"):
        y, sT = wkv7(*xs, impl=impl)
        _check(y, y_ref, f"y ({impl})", grad=False)
        _check(sT, sT_ref, f"s_T ({impl})", grad=False)
    one = tuple(x[:, :1] for x in xs[:6]) + (xs[6],)
    y1_ref, s1_ref, _ = reference_f64(one, jnp.zeros((1, 1, 2, 8)), jnp.zeros((1, 2, 8, 8)))
    y1, s1 = wkv7(*one, impl="chunked")  # T == 1 takes the single-step path
    _check(y1, y1_ref, "decode y", grad=False)
    _check(s1, s1_ref, "decode s_T", grad=False)


def test_resolve_auto_and_bad_names():
    expected = WkvImpl.PALLAS if jax.default_backend() == "gpu" else WkvImpl.LOOP_CHUNKED
    assert resolve("auto") is expected
    with pytest.raises(ValueError, match="choose one of: auto, scan, loop, chunked, loop_chunked, pallas, "
                                         "pallas_interpret"):
        resolve("fast")
    if jax.default_backend() != "gpu":
        xs = rwkv_inputs(0, 1, 4, 1, 8)
        with pytest.raises(ValueError, match="pallas_interpret"):
            wkv7(*xs, impl="pallas")


def test_loop_chunked_runs_the_loop_unless_differentiated():
    """Without a VJP the traced computation is the loop's; under `jax.vjp` it is the chunked form's (its cumsum),
    with the chunked form's outputs and gradients bit for bit."""
    xs = rwkv_inputs(9, 2, 19, 2, 8)
    plain = str(jax.make_jaxpr(wkv7_loop_chunked)(*xs))
    under_vjp = str(jax.make_jaxpr(lambda *xs: jax.vjp(wkv7_loop_chunked, *xs)[0])(*xs))
    assert "cumsum" not in plain and str(jax.make_jaxpr(wkv7_loop)(*xs)).count("scan") == plain.count("scan")
    assert "cumsum" in under_vjp
    cot_y = jnp.ones(xs[0].shape, F32)
    cot_sT = jnp.ones(xs[6].shape, F32)
    (y, sT), grads = _outputs_and_grads(wkv7_loop_chunked, xs, cot_y, cot_sT)
    (y_c, sT_c), grads_c = _outputs_and_grads(wkv7_chunked, xs, cot_y, cot_sT)
    for got, want in zip((y, sT, *grads), (y_c, sT_c, *grads_c)):  # training keeps the chunked form exactly
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_pallas_rejects_bad_shapes_and_chunk():
    xs = rwkv_inputs(0, 1, 4, 1, 8)
    with pytest.raises(ValueError, match="log_w has shape"):
        wkv7_pallas(xs[0], xs[1][:, :2], *xs[2:], interpret=True)
    with pytest.raises(ValueError, match="power of two"):
        wkv7_pallas(*xs, chunk=12, interpret=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_pallas_compiled_on_gpu(dtype):
    """The Triton-lowered kernel (not interpret) against the float64 reference, fp32 dots (precision HIGHEST)."""
    case = (2, 257, 3, 64, "random", dtype)
    xs, cot_y, cot_sT, (y_ref, sT_ref, grads_ref) = _reference(case)
    (y, sT), grads = _outputs_and_grads(wkv7_pallas, xs, cot_y, cot_sT)
    _check(y, y_ref, "y", grad=False)
    _check(sT, sT_ref, "s_T", grad=False)
    for name, g, g_ref in zip(INPUT_NAMES, grads, grads_ref):
        _check(g, g_ref, f"d{name}", grad=True)


def test_pallas_kernels_lower_to_triton_for_cuda():
    """Both kernels (forward and backward) pass the Pallas-Triton lowering for CUDA, checked without a GPU.

    Interpret mode accepts ops Triton cannot lower (value slicing, scans with xs, batched dots); this catches them.
    Triton's own compilation to PTX still needs a GPU (the `gpu` test above).
    """
    xs = rwkv_inputs(0, 1, 20, 1, 16, dtype=BF16)

    def loss(*xs):
        y, sT = wkv7_pallas(*xs)
        return jnp.sum(y) + jnp.sum(sT)

    lowered = jax.jit(jax.grad(loss, argnums=tuple(range(7)))).trace(*xs).lower(lowering_platforms=("cuda",))
    hlo = lowered.as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 2, "expected the forward and the backward Triton kernels"
    assert "wkv7_fwd" in hlo and "wkv7_bwd" in hlo
