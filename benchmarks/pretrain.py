"""Pretraining step throughput and MFU of small byte-level configs on this CPU: scan vs chunked WKV, remat on/off.

    PYTHONPATH=. .venv/bin/python benchmarks/pretrain.py [--configs 4x256,6x256,4x384] [--ctx 256] [--batch 16]

MFU = 6 FLOPs per matmul parameter per token (forward 2, backward 4; the recomputed forward of remat is not
useful work) divided by the fp32 matmul rate measured in the same run (a 2048^3 matmul: the anchor).
One JSON line per case; steps after two warm-up (compile) steps, median of 5 timed steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


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


def run_case(L: int, C: int, ctx: int, batch: int, impl: str, remat: str) -> dict:
    from rwkvjax.model.init import init_params
    from rwkvjax.model.state import zero_state
    from rwkvjax.train.config import PretrainConfig
    from rwkvjax.train.pretrain import make_steps, pretrain_optimizer
    pc = PretrainConfig(out="/tmp/x", n_layer=L, n_embd=C, ctx_len=ctx, batch=batch, wkv_impl=impl, remat=remat)
    config = pc.model_config()
    params = init_params(config, 0)
    tx = pretrain_optimizer(pc)
    opt = tx.init(params)
    step, _ = make_steps(config, tx, pc)
    rng = np.random.default_rng(0)
    state = zero_state(config, batch)
    times = []
    for i in range(7):
        x = jnp.asarray(rng.integers(1, 256, (batch, ctx)), jnp.int32)
        t = time.perf_counter()
        params, opt, state, loss = step(params, opt, state, x, x)
        loss.block_until_ready()
        if i >= 2:
            times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    tok_s = batch * ctx / sec
    return {"L": L, "C": C, "params": config.n_params(), "ctx": ctx, "batch": batch, "wkv": impl, "remat": remat,
            "step_s": round(sec, 4), "tokens_per_s": round(tok_s), "flops_per_s": 6 * matmul_params(config) * tok_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="4x256,6x256,4x384")
    ap.add_argument("--ctx", type=int, nargs="+", default=[256])
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--impls", default="scan,chunked")
    ap.add_argument("--remat", default="none,full", help="policies of rwkvjax.train.remat, comma-separated")
    a = ap.parse_args()
    anchor = matmul_rate()
    print(json.dumps({"anchor_matmul_gflops": round(anchor / 1e9, 1), "devices": jax.device_count()}), flush=True)
    for spec in a.configs.split(","):
        L, C = map(int, spec.split("x"))
        for ctx in a.ctx:
            for batch in a.batch:
                for impl in a.impls.split(","):
                    for remat in a.remat.split(","):
                        r = run_case(L, C, ctx, batch, impl, remat)
                        r["mfu"] = round(r.pop("flops_per_s") / anchor, 3)
                        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
