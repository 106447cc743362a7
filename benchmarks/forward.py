"""Forward speed: rwkvjax vs BlinkDL's official `rwkv` package (`cpu fp32`) on one random 0.1B-shaped model.

    PYTHONPATH=. .venv/bin/python benchmarks/forward.py [--prefill-T 512] [--decode-steps 48] [--repeats 3]

Needs the `[reference]` extra (torch + rwkv==0.8.32). Measures, in one run and on the same weights:
prefill tokens/s (B=1, T tokens, logits at every position) and decode tokens/s (T=1 steps carrying the state),
for rwkvjax fp32, the official package fp32 and rwkvjax with bf16 weights (decode). Compilation is excluded
(one warm-up call per shape), device work is synchronised with block_until_ready, figures are medians.
Also measures the machine's fp32 matmul rate and reports prefill as a fraction of that bound.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ.pop("RWKV_DE_VERSION", None)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rwkvjax  # noqa: E402
from rwkvjax.model.params import from_official  # noqa: E402
from rwkvjax.model.wkv import resolve  # noqa: E402
from tests.tools.make_golden import random_checkpoint  # noqa: E402

SHAPE_0_1B = dict(L=12, C=768, F=3072, V=65536, D_DECAY=64, D_AAA=64, D_MV=32, D_GATE=128)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Matmul:
    """fp32 jnp.dot of two n x n matrices: the machine's matmul bound, timed in turn with the models."""

    def __init__(self, n: int = 2048):
        self.flops = 2 * n ** 3
        self.a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        self.b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        self.dot = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
        self.prefill()

    def prefill(self):
        self.dot(self.a, self.b).block_until_ready()


def matmul_flops_per_token(cfg: rwkvjax.Config) -> int:
    """2 x (weights touched by matmuls per token): the four att linears, LoRAs, FFN and head (not emb)."""
    C, F = cfg.n_embd, cfg.dim_ffn
    lora = cfg.d_decay + cfg.d_aaa + cfg.d_mv + cfg.d_gate
    return 2 * (cfg.n_layer * (4 * C * C + 2 * C * F + 2 * C * lora) + cfg.vocab_size * C)


class Official:
    """The official model behind prefill/decode callables (its forward mutates the state list: copies)."""

    def __init__(self, model, tokens):
        self.model, self.ids = model, [int(t) for t in tokens]
        self.zero = model.generate_zero_state()
        model.forward(self.ids[:16], copy.deepcopy(self.zero), full_output=True)  # TorchScript warm-up
        _, self.state = model.forward(self.ids[:8], copy.deepcopy(self.zero))
        for t in range(8):  # TorchScript profiles the first calls of the one-token path
            model.forward(self.ids[t], copy.deepcopy(self.state))
        self.t = 0

    def prefill(self):
        self.model.forward(self.ids, copy.deepcopy(self.zero), full_output=True)

    def decode(self):
        _, self.state = self.model.forward(self.ids[self.t % len(self.ids)], self.state)
        self.t += 1


class Ours:
    """rwkvjax behind the same callables; every shape is compiled here, outside the timings."""

    def __init__(self, params, cfg, tokens, impl=None):
        self.params, self.cfg, self.impl = params, cfg, impl
        self.toks = jnp.asarray(tokens)[None]
        self.zero = rwkvjax.zero_state(cfg, 1)
        if impl is not None:
            self.prefill()  # compile
        _, self.state = jax.block_until_ready(rwkvjax.forward(params, self.toks[:, :8], self.zero, config=cfg))
        self.t = 0
        self.decode()  # compile T=1

    def prefill(self):
        jax.block_until_ready(rwkvjax.forward(self.params, self.toks, self.zero, config=self.cfg,
                                              wkv_impl=self.impl))

    def decode(self):
        tok = self.toks[:, self.t % self.toks.shape[1]][:, None]
        _, self.state = jax.block_until_ready(rwkvjax.forward(self.params, tok, self.state, config=self.cfg))
        self.t += 1


def interleaved(systems: dict, method: str, rounds: int, per_round: int = 1) -> dict[str, list[float]]:
    """Seconds per call of `method` for each system, taking turns so all see the same machine load."""
    out = {name: [] for name in systems}
    for _ in range(rounds):
        for name, sys_ in systems.items():
            out[name] += [seconds(getattr(sys_, method)) for _ in range(per_round)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill-T", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=0, help="0 keeps torch's default")
    ap.add_argument("--prefill-impls", default="auto,scan,chunked", help="WKV implementations to time in prefill")
    args = ap.parse_args()
    impls = [resolve(i).value if i == "auto" else i for i in args.prefill_impls.split(",")]
    impls = list(dict.fromkeys(impls))  # auto resolves to one of the others on this backend

    import torch
    from rwkv.model import RWKV
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    sd = random_checkpoint(rng, **SHAPE_0_1B)
    tokens = rng.integers(0, SHAPE_0_1B["V"], args.prefill_T).astype(np.int32)
    cfg, params = from_official(sd, dtype=jnp.float32, source="random 0.1B")
    _, params_bf16 = from_official(sd, dtype=jnp.bfloat16, source="random 0.1B")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, f"{tmp}/m.pth")
        del sd
        official = RWKV(model=f"{tmp}/m", strategy="cpu fp32")
    print(f"setup {time.perf_counter() - t0:.1f}s; {cfg}; {cfg.n_params() / 1e6:.1f}M params; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)", flush=True)

    off, mm = Official(official, tokens), Matmul()
    prefillers = {"official": off, **{f"rwkvjax wkv={i}": Ours(params, cfg, tokens, i) for i in impls}}
    pre = interleaved({**prefillers, "matmul": mm}, "prefill", args.repeats)
    gflops = mm.flops / statistics.median(pre.pop("matmul")) / 1e9
    print(f"fp32 matmul 2048^3: {gflops:.1f} GFLOP/s", flush=True)
    decoders = {"official": off, "rwkvjax fp32": prefillers[f"rwkvjax wkv={impls[0]}"],
                "rwkvjax bf16": Ours(params_bf16, cfg, tokens)}
    dec = interleaved(decoders, "decode", max(1, args.decode_steps // 8), per_round=8)
    print(f"load average at end: {os.getloadavg()}", flush=True)
    tps = lambda ts, n=1: n / statistics.median(ts)
    ratio = lambda ours, ref: statistics.median(r / o for o, r in zip(ours, ref))  # per-round speed-ups

    flops = matmul_flops_per_token(cfg)
    T = args.prefill_T
    default = f"rwkvjax wkv={resolve('auto').value}"
    print()
    print("| measure | official cpu fp32 (tok/s) | rwkvjax (tok/s) | ratio (median of per-round ratios) | target |")
    print("|---|---|---|---|---|")
    for name in (n for n in pre if n != "official"):
        tag = " (default on this backend)" if name == default else ""
        print(f"| prefill T={T}, B=1, all logits, {name[8:]}{tag} | {tps(pre['official'], T):.1f} | "
              f"{tps(pre[name], T):.1f} | {ratio(pre[name], pre['official']):.2f}x | >= 1.3x |")
    for name, target in (("rwkvjax fp32", "2x"), ("rwkvjax bf16", "4x")):
        print(f"| decode T=1, {name[8:]} weights | {tps(dec['official']):.2f} | {tps(dec[name]):.2f} | "
              f"{ratio(dec[name], dec['official']):.2f}x | >= {target} |")
    best = max((n for n in pre if n != "official"), key=lambda n: tps(pre[n], T))
    pct = lambda name: 100 * tps(pre[name], T) * flops / (gflops * 1e9)
    print(f"\nmatmul bound: {gflops:.1f} GFLOP/s x {flops / 1e6:.0f} MFLOP/token of matmuls -> "
          f"{gflops * 1e9 / flops:.0f} tok/s; prefill at {pct(best):.0f}% ({best}) and {pct('official'):.0f}% "
          f"(official) of it")


if __name__ == "__main__":
    main()
