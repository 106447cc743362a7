"""State-tuning step throughput and MFU at the 0.1B shape per rematerialisation policy, and peak RSS against the
context length.

    PYTHONPATH=. python benchmarks/train.py                   # MFU per policy, ctx 512, batch 4, interleaved rounds
    PYTHONPATH=. python benchmarks/train.py --ctx 4096 --rounds 2
    PYTHONPATH=. python benchmarks/train.py memory            # peak RSS per policy at ctx 512 and 4096
    PYTHONPATH=. python benchmarks/train.py merges            # MFU with dynamic merges (full remat)

MFU counts the FLOPs state tuning must do: the forward matmuls plus their input gradients (no weight
gradients: the weights are frozen), 4 FLOPs per matmul parameter per token, divided by the machine's
fp32 matmul rate (the anchor: a 2048^3 `jnp.dot`). The anchor is measured right before and right after every
timed step (the machine is shared; a round's MFU uses the mean of its two anchors) and the figure is the
median over rounds; the policies take turns within each round. `mfu_cpu_time` is the same ratio with both
rates measured in this process's CPU time instead of wall time: other jobs on the cores slow the wall clock
but not the CPU seconds a step takes (it does not charge a step for a core it leaves idle, though). A policy whose compiled step
(`memory_analysis()`: arguments + outputs + temporaries - donated) would not fit in the memory budget is not
run; its predicted peak is reported instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    # run from the repo root's packages, not from sibling scripts in benchmarks/ (e.g. benchmarks/ingestion.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax
import jax.numpy as jnp
import numpy as np

POLICIES = ("none", "dots", "full")


def matmul_rate(n: int = 2048, reps: int = 3, cpu: bool = False):
    """fp32 n^3 matmul FLOP/s by wall clock (median of reps); with `cpu`, also by this process's CPU time."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times, cpu_times = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    rate = 2 * n ** 3 / float(np.median(times))
    return (rate, 2 * n ** 3 / float(np.median(cpu_times))) if cpu else rate


def matmul_params(cfg) -> int:
    C, F = cfg.n_embd, cfg.dim_ffn
    lora = cfg.d_decay + cfg.d_aaa + cfg.d_mv + cfg.d_gate
    return cfg.n_layer * (4 * C * C + 2 * C * F + 2 * C * lora) + C * cfg.vocab_size


def _setup(ctx: int, batch: int, merges: bool):
    """0.1B-shaped random model, trainable, optimizer and one batch of random windows."""
    import rwkvjax
    from rwkvjax.merges.hypernet import init_hypernet
    from rwkvjax.model.init import init_params
    from rwkvjax.train.data import Window, make_batch
    from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
    from rwkvjax.train.trainable import init_trainable
    cfg = rwkvjax.PRESETS["0.1B"]
    params = init_params(cfg, 0, live_output=True)
    hyper = init_hypernet(cfg, jax.random.key(0)) if merges else None
    tr = init_trainable(cfg, hyper=hyper)
    tx = state_tuning_optimizer(tr, OptimConfig())
    rng = np.random.default_rng(0)
    S = 256
    wins = []
    for _ in range(batch):
        units = rng.integers(1, cfg.vocab_size + (S if merges else 0), ctx).astype(np.int32)
        slots = rng.integers(1, cfg.vocab_size, (S, 2)).astype(np.int32) if merges else None
        tables = (slots, np.zeros(S, np.int32), slots) if merges else (None, None, None)
        wins.append(Window("bench", units, ctx * 4, ctx, *tables))
    b = make_batch(wins, [1.0] * batch, batch_size=batch, ctx_len=ctx, n_slots=S if merges else None)
    return cfg, params, tr, tx, b


def _step(cfg, tx, policy: str, merges: bool):
    from rwkvjax.merges.units import MERGED, PLAIN
    from rwkvjax.train.step import make_train_step
    return make_train_step(cfg, tx, units=MERGED if merges else PLAIN, max_traces=None, remat=policy)


def compiled_peak(step, *args) -> int:
    """Bytes the compiled step holds at once on this backend: arguments + outputs + temporaries - donated."""
    m = step.lower(*args).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _auto(cfg, ctx: int, batch: int) -> str:
    from rwkvjax.train.remat import resolve_remat
    return resolve_remat("auto", ctx_len=ctx, batch=batch, config=cfg)


def throughput(ctx: int = 512, batch: int = 4, rounds: int = 3, policies=POLICIES, merges: bool = False,
               budget_gb: float | None = None) -> dict:
    from rwkvjax.train.remat import available_memory
    cfg, params, tr0, tx, b = _setup(ctx, batch, merges)
    budget = (budget_gb * 2 ** 30) if budget_gb else 0.8 * available_memory()
    flops = 4 * matmul_params(cfg) * ctx * batch
    runs, rows = {}, []
    for policy in policies:
        step = _step(cfg, tx, policy, merges)
        tr = jax.tree.map(jnp.copy, tr0)
        opt = tx.init(tr)
        peak = compiled_peak(step, tr, opt, params, b)
        row = {"policy": policy, "compiled_peak_gb": peak / 2 ** 30}
        rows.append(row)
        if peak > budget:
            row["skipped"] = f"compiled peak {peak / 2 ** 30:.1f} GB over the budget {budget / 2 ** 30:.1f} GB"
            continue
        t = time.perf_counter()
        tr, opt, m = step(tr, opt, params, b)
        jax.block_until_ready(m)
        row["compile_and_first_s"] = time.perf_counter() - t
        row["loss"] = float(m["loss"])
        runs[policy] = [step, tr, opt, row, [], []]
    for _ in range(rounds):
        for policy, run in runs.items():
            step, tr, opt, row, times, mfus = run
            before, before_cpu = matmul_rate(cpu=True)
            t, c = time.perf_counter(), time.process_time()
            tr, opt, m = step(tr, opt, params, b)
            jax.block_until_ready(m)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            after, after_cpu = matmul_rate(cpu=True)
            run[1], run[2] = tr, opt
            times.append(dt)
            mfus.append((flops / dt / ((before + after) / 2), flops / dc / ((before_cpu + after_cpu) / 2)))
            row.setdefault("anchor_gflops", []).extend([before / 1e9, after / 1e9])
    for policy, (_, _, _, row, times, mfus) in runs.items():
        dt = float(np.median(times))
        wall, cpu = [m[0] for m in mfus], [m[1] for m in mfus]
        row.update(step_s=dt, step_s_all=times, tokens_per_s=ctx * batch / dt, achieved_gflops=flops / dt / 1e9,
                   mfu=float(np.median(wall)), mfu_all=wall, mfu_cpu_time=float(np.median(cpu)),
                   anchor_gflops_median=float(np.median(row.pop("anchor_gflops"))))
    return {"bench": "train_step", "shape": "0.1B", "ctx": ctx, "batch": batch, "merges": merges, "rounds": rounds,
            "matmul_params": matmul_params(cfg), "auto_picks": _auto(cfg, ctx, batch),
            "devices": jax.devices()[0].device_kind, "rows": rows}


def memory_child(ctx: int, batch: int, policy: str) -> dict:
    cfg, params, tr, tx, b = _setup(ctx, batch, False)
    chosen = _auto(cfg, ctx, batch) if policy == "auto" else policy
    step = _step(cfg, tx, chosen, False)
    opt = tx.init(tr)
    peak = compiled_peak(step, tr, opt, params, b)
    tr, opt, m = step(tr, opt, params, b)
    jax.block_until_ready(m)
    return {"ctx": ctx, "batch": batch, "policy": policy, "runs": chosen, "compiled_peak_mb": peak / 2 ** 20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory(batch: int = 4, ctxs=(512, 4096), policies=POLICIES + ("auto",), budget_gb: float | None = None) -> dict:
    """Peak RSS of one step per (policy, ctx), each in a fresh process. Rows predicted over the budget (the
    compiled step's own memory analysis, from a child that compiles but does not run) are reported, not run."""
    from rwkvjax.train.remat import available_memory
    budget = (budget_gb * 2 ** 30) if budget_gb else 0.8 * available_memory()
    rows = []
    for ctx in ctxs:
        for policy in policies:
            pred = json.loads(_child("predict-child", ctx, batch, policy))
            if pred["compiled_peak_mb"] * 2 ** 20 > budget:
                rows.append(dict(pred, skipped=f"compiled peak over the budget {budget / 2 ** 30:.1f} GB"))
                continue
            rows.append(json.loads(_child("memory-child", ctx, batch, policy)))
    by = {(r["ctx"], r["policy"]): r.get("peak_rss_mb") for r in rows}
    ratios = {p: by[(ctxs[-1], p)] / by[(ctxs[0], p)] for p in policies
              if by.get((ctxs[0], p)) and by.get((ctxs[-1], p))}
    return {"bench": "train_peak_rss", "batch": batch, "rows": rows, f"ratio_{ctxs[-1]}_over_{ctxs[0]}": ratios}


def predict_child(ctx: int, batch: int, policy: str) -> dict:
    cfg, params, tr, tx, b = _setup(ctx, batch, False)
    chosen = _auto(cfg, ctx, batch) if policy == "auto" else policy
    peak = compiled_peak(_step(cfg, tx, chosen, False), tr, tx.init(tr), params, b)
    return {"ctx": ctx, "batch": batch, "policy": policy, "runs": chosen, "compiled_peak_mb": peak / 2 ** 20}


def _child(mode: str, ctx: int, batch: int, policy: str) -> str:
    r = subprocess.run([sys.executable, __file__, mode, str(ctx), str(batch), policy], capture_output=True,
                       text=True, check=True)
    return r.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("memory-child", "predict-child"):
        fn = memory_child if sys.argv[1] == "memory-child" else predict_child
        print(json.dumps(fn(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
        sys.exit()
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="throughput", choices=("throughput", "memory", "merges"))
    ap.add_argument("--ctx", default=None, help="throughput: one context length; memory: a comma list")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policies", default=None, help="comma list (default: none,dots,full; memory adds auto)")
    ap.add_argument("--budget-gb", type=float, default=None, help="default: 80%% of the memory available now")
    a = ap.parse_args()
    pols = tuple(a.policies.split(",")) if a.policies else None
    if a.mode == "memory":
        ctxs = tuple(int(c) for c in a.ctx.split(",")) if a.ctx else (512, 4096)
        print(json.dumps(memory(a.batch, ctxs, pols or POLICIES + ("auto",), a.budget_gb)))
    else:
        print(json.dumps(throughput(int(a.ctx or 512), a.batch, a.rounds, pols or POLICIES,
                                    merges=a.mode == "merges", budget_gb=a.budget_gb)))
