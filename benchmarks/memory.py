"""Memory at scale: the compiled train step and decode of the real default model on paper, and `score` over long
streams in practice.

    PYTHONPATH=. python benchmarks/memory.py paper      # 1.5B: train step and decode, bf16 and fp32, no weights
    PYTHONPATH=. python benchmarks/memory.py score      # peak RSS of `score` on the demo model, 10K..1M tokens

`paper` compiles each function for abstract arguments (`jax.ShapeDtypeStruct`: nothing is allocated, no
weights are read) and reads XLA's buffer assignment from `compiled.memory_analysis()`; the peak it reports is
arguments + outputs + temporaries - donated (aliased) buffers. Those are this backend's (XLA:CPU) figures: a GPU
compiles other fusions and scratch buffers, so treat them as an estimate there.

`score` runs `score_files` (what `python cli.py score` runs) in a fresh process per length on real text (the
standard library's sources) and reads the process's peak resident set (VmHWM of /proc/self/status).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # run from the repo root's packages, not from sibling scripts in benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax
import jax.numpy as jnp

GB = 2 ** 30
TARGET_GB = 6.0  # streamtts's "~6 GB VRAM target" (shared/reference/ORIGINAL_SYSTEM.md)
DEMO_MODEL = Path(__file__).resolve().parents[1] / "rwkvjax" / "data" / "demo_model.safetensors"


def _peak(compiled) -> dict:
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return {"arguments_gb": m.argument_size_in_bytes / GB, "temp_gb": m.temp_size_in_bytes / GB,
            "outputs_gb": m.output_size_in_bytes / GB, "donated_gb": m.alias_size_in_bytes / GB, "peak_gb": peak / GB}


def weight_bytes(params) -> int:
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))


def train_step_memory(cfg, *, ctx: int, batch: int, remat: str, dtype=jnp.bfloat16) -> dict:
    """The state-tuning step (`make_train_step`, plain units, S0 trainable) compiled for abstract weights."""
    from rwkvjax.train.objective import Batch
    from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
    from rwkvjax.train.step import make_train_step
    from rwkvjax.train.trainable import init_trainable
    from benchmarks.common.checkpoints import param_spec
    params = param_spec(cfg, dtype)
    tr0 = jax.eval_shape(functools.partial(init_trainable, cfg))
    tx = state_tuning_optimizer(tr0, OptimConfig())
    opt = jax.eval_shape(tx.init, tr0)
    ids, mask = jax.ShapeDtypeStruct((batch, ctx), jnp.int32), jax.ShapeDtypeStruct((batch, ctx), jnp.float32)
    per_window = jax.ShapeDtypeStruct((batch,), jnp.float32)
    step = make_train_step(cfg, tx, remat=remat, max_traces=None)
    t = time.perf_counter()
    compiled = step.lower(tr0, opt, params, Batch(ids, ids, mask, per_window, per_window)).compile()
    return {"what": "train step", "ctx": ctx, "batch": batch, "remat": remat, "weights_gb": weight_bytes(params) / GB,
            **_peak(compiled), "compile_s": time.perf_counter() - t}


def forward_memory(cfg, *, T: int, batch: int, dtype=jnp.bfloat16) -> dict:
    """`rwkvjax.forward` on T tokens (T = 1 is one decode step) compiled for abstract weights and state."""
    import rwkvjax
    from benchmarks.common.checkpoints import param_spec
    params = param_spec(cfg, dtype)
    state = jax.eval_shape(functools.partial(rwkvjax.zero_state, cfg, batch))
    tokens = jax.ShapeDtypeStruct((batch, T), jnp.int32)
    t = time.perf_counter()
    compiled = rwkvjax.forward.lower(params, tokens, state, config=cfg).compile()
    return {"what": "decode step" if T == 1 else f"forward of {T} tokens", "T": T, "batch": batch,
            "weights_gb": weight_bytes(params) / GB, "state_gb": weight_bytes(state) / GB, **_peak(compiled),
            "compile_s": time.perf_counter() - t}


def paper(cfg, *, ctxs=(512, 4096), batches=(1, 4), policies=("none", "dots", "full"), prefill=256,
          dtype=jnp.bfloat16, target_gb: float = TARGET_GB) -> list[dict]:
    """Rows of the at-scale table: the train step per (ctx, batch, policy) with what `--remat auto` picks on a
    device of `target_gb`, one decode step per batch, the serve prefill piece and a one-call forward of ctx."""
    from rwkvjax.train.remat import resolve_remat
    rows = []
    for ctx in ctxs:
        for batch in batches:
            for policy in policies:
                r = train_step_memory(cfg, ctx=ctx, batch=batch, remat=policy, dtype=dtype)
                # what auto picks when the device holds target_gb in all and the weights are already loaded
                r["auto_on_target"] = resolve_remat("auto", ctx_len=ctx, batch=batch, config=cfg,
                                                    available_bytes=int((target_gb - r["weights_gb"]) * GB))
                rows.append(r)
    for batch in batches:
        rows.append(forward_memory(cfg, T=1, batch=batch, dtype=dtype))
        rows.append(forward_memory(cfg, T=prefill, batch=batch, dtype=dtype))
        for ctx in ctxs:
            rows.append(forward_memory(cfg, T=ctx, batch=batch, dtype=dtype))
    for r in rows:
        r["fits_target"] = r["peak_gb"] <= target_gb
    return rows


def bf16_on_paper(bf16_rows: list[dict], fp32_rows: list[dict], target_gb: float = TARGET_GB) -> list[dict]:
    """XLA:CPU has no bf16 matmul: it converts bf16 weights to float32 (a float32 copy of every weight among the
    temporaries), which a GPU does not. Activations are float32 for either weight dtype, so the bf16 model on a
    backend with bf16 matmuls needs about the bf16 weights plus the float32 build's non-weight buffers."""
    out = []
    for b, f in zip(bf16_rows, fp32_rows):
        assert {k: b.get(k) for k in ("what", "ctx", "T", "batch", "remat")} == \
            {k: f.get(k) for k in ("what", "ctx", "T", "batch", "remat")}
        native = b["weights_gb"] + f["peak_gb"] - f["weights_gb"]
        out.append(dict(b, peak_fp32_gb=f["peak_gb"], temp_fp32_gb=f["temp_gb"], bf16_native_gb=native,
                        fits_target_native=native <= target_gb))
    return out


# ----- score over long streams -----

def _text(n_bytes: int) -> str:
    """n_bytes of ASCII text from the standard library's sources (real code and prose, no padding)."""
    parts, size = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        t = f.read_bytes().decode("ascii", "ignore")
        parts.append(t)
        size += len(t)
        if size >= n_bytes:
            break
    return "".join(parts)[:n_bytes]


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def score_child(n_tokens: int) -> dict:
    from rwkvjax.eval.config import ScoreConfig
    from rwkvjax.eval.scoring import score_files
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stream.txt"
        path.write_text(_text(n_tokens))  # the demo model reads bytes: one token per ASCII byte
        t = time.perf_counter()
        rows = list(score_files(ScoreConfig(files=(str(path),), model=str(DEMO_MODEL))))
        seconds = time.perf_counter() - t
    _, nbytes, bpb, _ = rows[0]
    return {"tokens": nbytes, "bits_per_byte": bpb, "seconds": seconds, "tokens_per_s": nbytes / seconds,
            "peak_rss_mb": _vm("VmHWM"), "rss_end_mb": _vm("VmRSS")}


def score(lengths=(10_240, 102_400, 1_048_576)) -> dict:
    """Lengths are multiples of the longest piece (512), so every run compiles the same single shape."""
    rows = []
    for n in lengths:
        r = subprocess.run([sys.executable, __file__, "score-child", str(n)], capture_output=True, text=True,
                           check=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {"bench": "score_peak_rss", "model": "demo", "rows": rows,
            "growth_mb_first_to_last": rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "score-child":
        print(json.dumps(score_child(int(sys.argv[2]))))
        sys.exit()
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("paper", "score"))
    ap.add_argument("--size", default="1.5B", help="paper: a preset of rwkvjax.PRESETS")
    ap.add_argument("--dtype", default="both", choices=("both", "bf16", "fp32"),
                    help="both: bf16 and fp32 builds, and the bf16 estimate without XLA:CPU's float32 weight copy")
    a = ap.parse_args()
    if a.mode == "paper":
        import rwkvjax
        cfg = rwkvjax.PRESETS[a.size]
        runs = {d: paper(cfg, dtype=jnp.bfloat16 if d == "bf16" else jnp.float32)
                for d in (("bf16", "fp32") if a.dtype == "both" else (a.dtype,))}
        rows = bf16_on_paper(runs["bf16"], runs["fp32"]) if a.dtype == "both" else runs[a.dtype]
        for row in rows:
            print(json.dumps(row), flush=True)
    else:
        print(json.dumps(score()))
