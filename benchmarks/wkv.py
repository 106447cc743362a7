"""WKV-7 speed and memory: per-token scan, per-token loop and chunked (CPU), and the Pallas kernel (GPU).

    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py cpu      # timings, fwd and fwd+bwd, scan vs loop vs chunked
    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py memory   # peak memory of fwd+bwd, T=512 vs T=8192 (subprocesses)
    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py profile  # where a forward's time goes, per XLA:CPU op
    PYTHONPATH=. .venv/bin/python benchmarks/wkv.py gpu      # Pallas (compiled) vs chunked, B=8 T=4096 C=4096 bf16

fwd+bwd = gradients of <y, cy> + <s_T, cs> w.r.t. all seven inputs (r, log_w, k, v, a, b, s0).
Timings (cpu): after one warm-up call each (compile excluded), the implementations are called in turn, `--repeats`
rounds, so all see the same machine load; medians, and the median over rounds of (scan time / this time).
Against rwkv-ops and the official package: benchmarks/peers.py.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rwkvjax.model.wkv import wkv7_scan  # noqa: E402
from rwkvjax.model.wkv_chunked import wkv7_chunked  # noqa: E402
from rwkvjax.model.wkv_loop import wkv7_loop  # noqa: E402


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


IMPLS = {"scan": wkv7_scan, "loop": wkv7_loop, "chunked": wkv7_chunked}


def _no_wkv(r, log_w, k, v, a, b, s0):
    """Memory baseline: keeps every input in the graph, no recurrence (temp(impl) - temp(this) = the WKV's share)."""
    return r * log_w * k * v * a * b, s0


MEMORY_IMPLS = dict(IMPLS, none=_no_wkv)


def rounds_ms(fns: dict, xs, repeats) -> dict[str, list[float]]:
    """Milliseconds per call, the functions called in turn within each round (one warm-up call each first)."""
    for f in fns.values():
        jax.block_until_ready(f(*xs))
    out = {n: [] for n in fns}
    for _ in range(repeats):
        for n, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*xs))
            out[n].append((time.perf_counter() - t0) * 1e3)
    return out


def bench_cpu(repeats):
    print("| shape (B, T, H, N) | impl | fwd ms | fwd: scan time / this | fwd+bwd ms | fwd+bwd: scan time / this |")
    print("|---|---|---:|---:|---:|---:|")
    for shape in [(1, 4096, 12, 64), (8, 512, 12, 64)]:
        xs = make_inputs(*shape)
        f = rounds_ms({n: fwd_fn(i) for n, i in IMPLS.items()}, xs, repeats)
        fb = rounds_ms({n: fwd_bwd_fn(i) for n, i in IMPLS.items()}, xs, repeats)
        vs_scan = lambda t, n: statistics.median(s / o for s, o in zip(t["scan"], t[n]))
        for n in IMPLS:
            print(f"| {shape} | {n} | {statistics.median(f[n]):.0f} | {vs_scan(f, n):.2f}× | "
                  f"{statistics.median(fb[n]):.0f} | {vs_scan(fb, n):.2f}× |", flush=True)


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


def _op_times(fn, xs) -> tuple[collections.Counter, collections.Counter]:
    """One traced call: (calls per op name, total ns per op name) from jax.profiler's XLA:CPU events."""
    from jax.profiler import ProfileData

    jax.block_until_ready(fn(*xs))
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        jax.block_until_ready(fn(*xs))
        jax.profiler.stop_trace()
        data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    calls, total = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                calls[ev.name] += 1
                total[ev.name] += ev.duration_ns
    return calls, total


def bench_profile(shapes, top):
    """Per-op times of one forward (profiling adds a few us per op): ops run once per call vs once per token."""
    impls = {"scan": (wkv7_scan, lambda xs: xs), "loop": (wkv7_loop, lambda xs: xs)}
    try:
        os.environ.setdefault("KERAS_BACKEND", "jax")
        import rwkv_ops  # the `bench` extra

        # its own decay form, log-log (decay = exp(-exp(w))), converted before the profiled call
        impls["rwkv-ops"] = (lambda r, w, k, v, a, b, s0: rwkv_ops.generalized_delta_rule(r, w, k, v, a, b,
                                                                                          initial_state=s0),
                             lambda xs: (xs[0], jnp.log(-xs[1])) + tuple(xs[2:]))
    except ImportError:
        print("rwkv-ops not installed (pip install -e '.[bench]'): profiling rwkvjax only")
    skip = ("$", "Thunk", "Pjit", "Common", "while", "end:", "Handle", "Allocate", "Parse", "Threadpool")
    for shape in shapes:
        xs = make_inputs(*shape)
        T = shape[1]
        for name, (impl, inputs) in impls.items():
            calls, total = _op_times(jax.jit(impl), jax.block_until_ready(inputs(xs)))
            ops = {k: v for k, v in total.items() if not k.startswith(skip)}
            once = sorted((k for k in ops if calls[k] == 1), key=lambda k: -ops[k])[:top]
            step = sorted((k for k in ops if calls[k] >= T), key=lambda k: -ops[k])[:top]
            print(f"{shape} {name}: once per call (ms): " + ", ".join(f"{k} {ops[k] / 1e6:.1f}" for k in once))
            print(f"{shape} {name}: per token (us per call): "
                  + ", ".join(f"{k} {ops[k] / calls[k] / 1e3:.2f}" for k in step), flush=True)


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
    ap.add_argument("mode", choices=["cpu", "memory", "profile", "gpu", "memory-child"])
    ap.add_argument("args", nargs="*", help="memory-child: IMPL T WRT")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=16, help="Pallas chunk size (gpu mode)")
    ap.add_argument("--wrt", choices=["all", "s0"], default="all", help="memory mode: which gradients")
    ap.add_argument("--impls", default="none,scan,chunked", help="memory mode: comma-separated implementations")
    ap.add_argument("--shapes", default="1,4096,12,64;8,512,12,64",
                    help="profile mode: B,T,H,N shapes separated by ';'")
    ap.add_argument("--top", type=int, default=6, help="profile mode: ops listed per group")
    a = ap.parse_args()
    if a.mode == "cpu":
        bench_cpu(a.repeats)
    elif a.mode == "memory":
        bench_memory(a.impls.split(","), a.wrt)
    elif a.mode == "profile":
        bench_profile([tuple(int(x) for x in sh.split(",")) for sh in a.shapes.split(";")], a.top)
    elif a.mode == "memory-child":
        memory_child(a.args[0], int(a.args[1]), a.args[2])
    else:
        bench_gpu(a.repeats, a.chunk)


if __name__ == "__main__":
    main()
