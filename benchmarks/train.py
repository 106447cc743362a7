"""State-tuning step throughput and MFU at the 0.1B shape, and peak RSS against the context length.

    PYTHONPATH=. python benchmarks/train.py                 # throughput + MFU (ctx 512, batch 4)
    PYTHONPATH=. python benchmarks/train.py memory          # peak RSS, ctx 512 vs 4096 (one subprocess each)

MFU counts the FLOPs state tuning must do: the forward matmuls plus their input gradients (no weight
gradients: the weights are frozen), 4 FLOPs per matmul parameter per token, divided by the machine's
fp32 matmul rate measured in the same run (the anchor).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# run from the repo root's packages, not from sibling scripts in benchmarks/ (e.g. benchmarks/ingestion.py)
sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax
import jax.numpy as jnp
import numpy as np


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times))


def matmul_params(cfg) -> int:
    C, F = cfg.n_embd, cfg.dim_ffn
    lora = cfg.d_decay + cfg.d_aaa + cfg.d_mv + cfg.d_gate
    return cfg.n_layer * (4 * C * C + 2 * C * F + 2 * C * lora) + C * cfg.vocab_size


def _setup(ctx: int, batch: int, merges: bool):
    import rwkvjax
    from rwkvjax.merges.hypernet import init_hypernet
    from rwkvjax.merges.units import MERGED, PLAIN
    from rwkvjax.model.init import init_params
    from rwkvjax.train.data import Window, make_batch
    from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
    from rwkvjax.train.step import make_train_step
    from rwkvjax.train.trainable import init_trainable
    cfg = rwkvjax.PRESETS["0.1B"]
    params = init_params(cfg, 0, live_output=True)
    hyper = init_hypernet(cfg, jax.random.key(0)) if merges else None
    tr = init_trainable(cfg, hyper=hyper)
    tx = state_tuning_optimizer(tr, OptimConfig())
    opt = tx.init(tr)
    rng = np.random.default_rng(0)
    S = 256
    wins = []
    for _ in range(batch):
        units = rng.integers(1, cfg.vocab_size + (S if merges else 0), ctx).astype(np.int32)
        slots = rng.integers(1, cfg.vocab_size, (S, 2)).astype(np.int32) if merges else None
        tables = (slots, np.zeros(S, np.int32), slots) if merges else (None, None, None)
        wins.append(Window("bench", units, ctx * 4, ctx, *tables))
    b = make_batch(wins, [1.0] * batch, batch_size=batch, ctx_len=ctx, n_slots=S if merges else None)
    step = make_train_step(cfg, tx, units=MERGED if merges else PLAIN, max_traces=1)
    return cfg, params, tr, opt, b, step


def throughput(ctx: int = 512, batch: int = 4, reps: int = 3, merges: bool = False) -> dict:
    rate = matmul_rate()
    cfg, params, tr, opt, b, step = _setup(ctx, batch, merges)
    t = time.perf_counter()
    tr, opt, m = step(tr, opt, params, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        tr, opt, m = step(tr, opt, params, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    tokens = ctx * batch
    flops = 4 * matmul_params(cfg) * tokens
    return {"bench": "train_step", "shape": "0.1B", "ctx": ctx, "batch": batch, "merges": merges,
            "step_s": dt, "tokens_per_s": tokens / dt, "compile_and_first_s": compile_s,
            "matmul_gflops": rate / 1e9, "achieved_gflops": flops / dt / 1e9, "mfu": flops / dt / rate,
            "devices": jax.devices()[0].device_kind}


def memory_child(ctx: int, batch: int) -> dict:
    cfg, params, tr, opt, b, step = _setup(ctx, batch, False)
    tr, opt, m = step(tr, opt, params, b)
    jax.block_until_ready(m)
    return {"ctx": ctx, "batch": batch, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory(batch: int = 4) -> dict:
    rows = []
    for ctx in (512, 4096):
        r = subprocess.run([sys.executable, __file__, "memory-child", str(ctx), str(batch)], capture_output=True,
                           text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {"bench": "train_peak_rss", "rows": rows, "ratio_4096_over_512": rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]}


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "throughput"
    if mode == "memory-child":
        print(json.dumps(memory_child(int(sys.argv[2]), int(sys.argv[3]))))
    elif mode == "memory":
        print(json.dumps(memory()))
    elif mode == "merges":
        print(json.dumps(throughput(merges=True)))
    else:
        print(json.dumps(throughput()))
