"""WKV-7 speed and memory: per-token scan vs chunked (CPU), and the Pallas kernel (GPU).

    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py cpu      # timings, fwd and fwd+bwd, scan vs chunked
    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py memory   # peak memory of fwd+bwd, T=512 vs T=8192 (subprocesses)
    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py gpu      # Pallas (compiled) vs chunked, B=8 T=4096 C=4096 bf16

fwd+bwd = gradients of <y, cy> + <s_T, cs> w.r.t. all seven inputs (r, log_w, k, v, a, b, s0).
Timings: median of `--repeats` runs after one warm-up (compile excluded).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rwkvjax.model.wkv import wkv7_scan  # noqa: E402
from rwkvjax.model.wkv_chunked import wkv7_chunked  # noqa: E402


def make_inputs(B, T, H, N, dtype=jnp.float32, seed=0):
    """seed: int or PRNG key. Realistic RWKV-7 inputs (bounded decay, a = -kk, b = kk*iclr), generated on the default device."""
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    ks = jax.random.split(key, 7)
    shape = (B, T, H, N)
    kk = jax.random.normal(ks[4], shape)
    kk = kk / jnp.linalg.norm(kk, axis=-1, keepdims=True)
    iclr = jax.nn.sigmoid(jax.random.normal(ks[5], shape))
    seq = (jax.random.normal(ks[0], shape), -np.exp(-0.5) * jax.nn.sigmoid(2 * jax.random.normal(ks[1], shape)),
           jax.random.normal(ks[2], shape), jax.random.normal(ks[3], shape), -kk, kk * iclr)
    s0 = 0.5 * jax.random.normal(ks[6], (B, H, N, N))
    return tuple(x.astype(dtype) for x in seq) + (s0,)


def fwd_fn(impl):
    return jax.jit(lambda *xs: impl(*xs))


def fwd_bwd_fn(impl, wrt="all"):
    """Gradient w.r.t. all seven inputs, or ("s0") w.r.t. the initial state only, as state tuning's bottom layer."""
    def loss(*xs):
        y, sT = impl(*xs)
        return jnp.sum(y * 1e-3) + jnp.sum(sT * 1e-3)

    return jax.jit(jax.grad(loss, argnums=tuple(range(7)) if wrt == "all" else 6))


def time_ms(fn, xs, repeats):
    jax.block_until_ready(fn(*xs))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*xs))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


IMPLS = {"scan": wkv7_scan, "chunked": wkv7_chunked}


def _no_wkv(r, log_w, k, v, a, b, s0):
    """Memory baseline: keeps every input in the graph, no recurrence (temp(impl) - temp(this) = the WKV's share)."""
    return r * log_w * k * v * a * b, s0


MEMORY_IMPLS = dict(IMPLS, none=_no_wkv)


def bench_cpu(repeats):
    print("| shape (B, T, H, N) | impl | fwd ms | fwd tok/s | fwd+bwd ms | fwd+bwd tok/s |")
    print("|---|---|---:|---:|---:|---:|")
    for B, T, H, N in [(1, 4096, 12, 64), (8, 512, 12, 64)]:
        xs = make_inputs(B, T, H, N)
        for name, impl in IMPLS.items():
            f = time_ms(fwd_fn(impl), xs, repeats)
            fb = time_ms(fwd_bwd_fn(impl), xs, repeats)
            print(f"| ({B}, {T}, {H}, {N}) | {name} | {f:.0f} | {B * T / f * 1e3:,.0f} | {fb:.0f} | "
                  f"{B * T / fb * 1e3:,.0f} |", flush=True)


def memory_child(impl_name, T, wrt):
    """Runs in a fresh process: peak RSS before and after one fwd+bwd, plus XLA's buffer plan.

    As in a model layer, the WKV inputs are made inside the compiled function (from a key, scaled by per-channel
    parameters), so they are intermediates rather than read-only entry arguments, which XLA would copy into the
    scan's loop state. wrt="all" differentiates w.r.t. the six scale vectors (needs every input cotangent) and s0.
    """
    B, H, N = 1, 12, 64
    impl = MEMORY_IMPLS[impl_name]

    def loss(scales, s0, key):
        xs = make_inputs(B, T, H, N, seed=key)
        seq = tuple(x * s for x, s in zip(xs[:6], scales))
        y, sT = impl(*seq, s0)
        return jnp.sum(y * 1e-3) + jnp.sum(sT * 1e-3)

    scales = tuple(jnp.ones((N,), jnp.float32) for _ in range(6))
    s0 = jnp.zeros((B, H, N, N), jnp.float32)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1) if wrt == "all" else 1))
    key = jax.random.PRNGKey(0)
    compiled = grad.lower(scales, s0, key).compile()
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    jax.block_until_ready(compiled(scales, s0, key))
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mem = compiled.memory_analysis()
    print(json.dumps(dict(impl=impl_name, T=T, rss_before_mb=before_kb / 1024, rss_peak_mb=after_kb / 1024,
                          xla_temp_mb=mem.temp_size_in_bytes / 2**20,
                          xla_args_mb=mem.argument_size_in_bytes / 2**20,
                          xla_out_mb=mem.output_size_in_bytes / 2**20)))


def bench_memory(impls, wrt):
    print(f"gradients w.r.t. {wrt}; B=1, H=12, N=64, float32")
    print("| impl | T | peak RSS MB | RSS growth during fwd+bwd MB | XLA temp MB | XLA args + outputs MB |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for name in impls:
        for T in (512, 8192):
            env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
            out = subprocess.run([sys.executable, __file__, "memory-child", name, str(T), wrt], env=env,
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows[name, T] = r
            print(f"| {name} | {T} | {r['rss_peak_mb']:.0f} | {r['rss_peak_mb'] - r['rss_before_mb']:.0f} | "
                  f"{r['xla_temp_mb']:.1f} | {r['xla_args_mb'] + r['xla_out_mb']:.1f} |", flush=True)
    for name in impls:
        a, b = rows[name, 512], rows[name, 8192]
        if name != "none" and "none" in impls:
            share = [rows[name, T]["xla_temp_mb"] - rows["none", T]["xla_temp_mb"] for T in (512, 8192)]
            print(f"{name}: XLA temp above the no-WKV baseline: T=512 {share[0]:.1f} MB, T=8192 {share[1]:.1f} MB")
        print(f"{name}: peak RSS ratio T=8192/T=512 = {b['rss_peak_mb'] / a['rss_peak_mb']:.2f}x, "
              f"XLA temp ratio = {b['xla_temp_mb'] / max(a['xla_temp_mb'], 1e-9):.2f}x")


def bench_gpu(repeats, chunk):
    """Pallas (Triton-compiled) at wind_rwkv's shape: B=8, T=4096, C=4096 (H=64, N=64), bf16 inputs, fwd+bwd."""
    if jax.default_backend() != "gpu":
        raise SystemExit(f"benchmarks/wkv.py gpu: needs a GPU backend, found {jax.default_backend()!r}")
    from pallas_kernels.wkv7 import wkv7 as wkv7_pallas

    B, T, H, N = 8, 4096, 64, 64
    xs = make_inputs(B, T, H, N, dtype=jnp.bfloat16)
    impls = {f"pallas chunk={chunk}": functools.partial(wkv7_pallas, chunk=chunk), "chunked (pure JAX)": wkv7_chunked}
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print("| impl | fwd ms | fwd+bwd ms |")
    print("|---|---:|---:|")
    for name, impl in impls.items():
        print(f"| {name} | {time_ms(fwd_fn(impl), xs, repeats):.2f} | {time_ms(fwd_bwd_fn(impl), xs, repeats):.2f} |",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "memory", "gpu", "memory-child"])
    ap.add_argument("args", nargs="*", help="memory-child: IMPL T WRT")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=16, help="Pallas chunk size (gpu mode)")
    ap.add_argument("--wrt", choices=["all", "s0"], default="all", help="memory mode: which gradients")
    ap.add_argument("--impls", default="none,scan,chunked", help="memory mode: comma-separated implementations")
    a = ap.parse_args()
    if a.mode == "cpu":
        bench_cpu(a.repeats)
    elif a.mode == "memory":
        bench_memory(a.impls.split(","), a.wrt)
    elif a.mode == "memory-child":
        memory_child(a.args[0], int(a.args[1]), a.args[2])
    else:
        bench_gpu(a.repeats, a.chunk)


if __name__ == "__main__":
    main()
