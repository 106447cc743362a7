"""Forward speed: rwkvjax vs BlinkDL's official `rwkv` package (`cpu fp32`) on one random 0.1B-shaped model.

    PYTHONPATH=. .venv/bin/python benchmarks/forward.py [--prefill-T 512] [--decode-rounds 8] [--repeats 3]
    PYTHONPATH=. .venv/bin/python benchmarks/forward.py --decode-only --decode-rounds 12

Needs the `[reference]` extra (torch + rwkv==0.8.32). Measures, in one run and on the same weights:
prefill tokens/s (B=1, T tokens, logits at every position) and decode tokens/s at B=1, for the official package
fp32 (one `forward(token, state)` per token) and rwkvjax: the compiled decode loop `generate` runs (`decode_n`,
greedy sampling on device, 16 tokens per call, decoding layout of `unstack_layers`) with fp32, int8 and bf16
weights, one `rwkvjax.forward` call per token (stacked fp32 weights), and one `Model.forward` call per token (the
public path: a loaded model stepped token by token runs the decoding layout). Every system is timed in turn, round by
round; ratios are medians of per-round ratios. Compilation is excluded (one warm-up call per shape), device work
is synchronised with block_until_ready. Also measures, interleaved with the models, the machine's fp32 matmul
rate (prefill bound) and its memory read bandwidth (torch sum over 512 MB, decode bound: the weights read per
token), and the int8 model's logit error against fp32.
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
from benchmarks.common.checkpoints import random_checkpoint  # noqa: E402
from rwkvjax.model.params import from_official, unstack_layers  # noqa: E402
from rwkvjax.model.quant import QInt8  # noqa: E402
from rwkvjax.model.wkv import resolve  # noqa: E402
from rwkvjax.serve.decode import Carry, decode_n  # noqa: E402
from rwkvjax.serve.sampling import Penalties, SamplingRows  # noqa: E402
from rwkvjax.text.tokenizer import for_model  # noqa: E402

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


class Bandwidth:
    """Memory read bandwidth: torch's (multi-threaded) sum over a 512 MB float32 tensor, timed with the models."""

    def __init__(self, nbytes: int = 512 << 20):
        import torch
        self.torch, self.a = torch, torch.ones(nbytes // 4, dtype=torch.float32)
        self.decode()

    def decode(self):
        float(self.torch.sum(self.a))


def weight_bytes_per_token(params) -> int:
    """Bytes of weights one decode step reads: every leaf but the embedding, of which it reads one row."""
    is_q = lambda a: isinstance(a, QInt8)
    total = sum(a.nbytes for a in jax.tree.leaves(params))
    emb = params.emb
    emb_row = (emb.q.nbytes // emb.q.shape[0] + 4) if is_q(emb) else emb.nbytes // emb.shape[0]
    return total - sum(a.nbytes for a in jax.tree.leaves(emb)) + emb_row


def matmul_flops_per_token(cfg: rwkvjax.Architecture) -> int:
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


class Stepper:
    """The public decode path: `Model.forward` with one token per call (what a library user writes)."""

    def __init__(self, model: rwkvjax.Model, tokens):
        self.model, self.ids = model, [int(t) for t in tokens]
        _, self.state = jax.block_until_ready(model.forward([self.ids[:8]]))
        self.t = 0
        self.decode()  # compile T=1

    def decode(self):
        tok = jnp.asarray([[self.ids[self.t % len(self.ids)]]], jnp.int32)
        _, self.state = jax.block_until_ready(self.model.forward(tok, self.state))
        self.t += 1


class Loop:
    """rwkvjax's compiled decode loop (`decode_n`: `generate`'s path) at B=1, greedy, `n` tokens per call."""

    def __init__(self, params, cfg, n: int = 16):
        self.params, self.cfg, self.n = unstack_layers(params), cfg, n
        V = cfg.vocab_size
        self.rows, self.w = SamplingRows.of([{"temperature": 0.0}]), jnp.ones((V,), jnp.float32)
        self.stop, self.limit = jnp.asarray([-1], jnp.int32), jnp.int32(n)
        self.carry = Carry(jnp.asarray([1], jnp.int32), rwkvjax.zero_state(cfg, 1), Penalties.zeros(1, V),
                           jax.random.key(0)[None])
        self.decode()  # compile

    def decode(self):
        self.carry, toks, _ = decode_n(self.params, self.carry, self.rows, self.w, self.stop, self.limit,
                                       config=self.cfg, n=self.n)
        toks.block_until_ready()


class OfficialN(Official):
    """The official model, `n` one-token calls per timed call (the loop's block)."""

    def __init__(self, model, tokens, n: int = 16):
        super().__init__(model, tokens)
        self.n = n

    def decode(self):
        for _ in range(self.n):
            super().decode()


def logit_error(params, other, cfg, tokens) -> dict:
    """Logits of `other` (e.g. int8 weights) against `params` (fp32): same tokens, sequence mode, zero state."""
    toks = jnp.asarray(tokens)[None]
    ref, _ = rwkvjax.forward(params, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    got, _ = rwkvjax.forward(other, toks, rwkvjax.zero_state(cfg, 1), config=cfg)
    d, std = jnp.abs(got - ref), float(jnp.std(ref))
    return {"max": float(d.max()), "mean": float(d.mean()), "std": std,
            "top1": float(jnp.mean(jnp.argmax(got, -1) == jnp.argmax(ref, -1)))}


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
    ap.add_argument("--decode-rounds", type=int, default=8, help="rounds of 16 decoded tokens per system")
    ap.add_argument("--repeats", type=int, default=3, help="prefill rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=0, help="0 keeps torch's default")
    ap.add_argument("--prefill-impls", default="auto,scan,chunked", help="WKV implementations to time in prefill")
    ap.add_argument("--decode-only", action="store_true", help="skip prefill and the matmul probe")
    ap.add_argument("--no-bf16", action="store_true", help="leave out the (slow) bf16 decode row")
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
    _, params_int8 = from_official(sd, dtype=jnp.int8, source="random 0.1B")
    params_bf16 = None if args.no_bf16 else from_official(sd, dtype=jnp.bfloat16, source="random 0.1B")[1]
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, f"{tmp}/m.pth")
        del sd
        official = RWKV(model=f"{tmp}/m", strategy="cpu fp32")
    print(f"setup {time.perf_counter() - t0:.1f}s; {cfg}; {cfg.n_params() / 1e6:.1f}M params; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)", flush=True)
    err = logit_error(params, params_int8, cfg, tokens[:64])
    print(f"int8 vs fp32 logits (T=64): max |d| {err['max']:.4f}, mean |d| {err['mean']:.5f} (logit std "
          f"{err['std']:.3f}: {err['max'] / err['std']:.4f} / {err['mean'] / err['std']:.5f} of it), "
          f"top-1 agreement {err['top1']:.3f}", flush=True)

    tps = lambda ts, n=1: n / statistics.median(ts)
    ratio = lambda ours, ref: statistics.median(r / o for o, r in zip(ours, ref))  # per-round speed-ups
    T = args.prefill_T
    if not args.decode_only:
        off, mm = Official(official, tokens), Matmul()
        prefillers = {"official": off, **{f"rwkvjax wkv={i}": Ours(params, cfg, tokens, i) for i in impls}}
        pre = interleaved({**prefillers, "matmul": mm}, "prefill", args.repeats)
        gflops = mm.flops / statistics.median(pre.pop("matmul")) / 1e9
        print(f"fp32 matmul 2048^3: {gflops:.1f} GFLOP/s", flush=True)
        del prefillers, mm

    n = 16
    decoders = {"official": OfficialN(official, tokens, n), "loop fp32": Loop(params, cfg, n),
                "loop int8": Loop(params_int8, cfg, n)}
    if params_bf16 is not None:
        decoders["loop bf16"] = Loop(params_bf16, cfg, n)
    decoders["forward fp32"] = Ours(params, cfg, tokens)  # one rwkvjax.forward call per token, stacked weights
    decoders["Model.forward fp32"] = Stepper(rwkvjax.Model(cfg, params, for_model(cfg.vocab_size)), tokens)
    decoders["memory probe"] = Bandwidth()
    print("compiled the decode loops", flush=True)
    dec = {k: [] for k in decoders}  # seconds per token (the probe: seconds per sum)
    for r in range(args.decode_rounds):
        for name, sys_ in decoders.items():
            if name == "memory probe":
                dec[name].append(seconds(sys_.decode))
                continue
            calls = n if "forward" in name else 1  # forward: one token per call; the others n per call
            dec[name].append(sum(seconds(sys_.decode) for _ in range(calls)) / n)
        print(f"round {r} (load {os.getloadavg()[0]:.1f}): " + "  ".join(
            f"{k} {1 / v[-1]:.1f}" for k, v in dec.items() if k != "memory probe") + " tok/s", flush=True)
    print(f"load average at end: {os.getloadavg()}", flush=True)

    probe_gbs = [(512 << 20) / t / 1e9 for t in dec.pop("memory probe")]
    bw = statistics.median(probe_gbs)
    nbytes = {"loop fp32": weight_bytes_per_token(params), "loop int8": weight_bytes_per_token(params_int8),
              "forward fp32": weight_bytes_per_token(params), "Model.forward fp32": weight_bytes_per_token(params)}
    if params_bf16 is not None:
        nbytes["loop bf16"] = weight_bytes_per_token(params_bf16)
    print(f"\nmemory probe (torch sum, 512 MB): median {bw:.1f} GB/s, rounds "
          + ", ".join(f"{g:.1f}" for g in probe_gbs))
    print("| measure | official cpu fp32 (tok/s) | rwkvjax (tok/s) | ratio (median of per-round ratios) | "
          "weights read per token | % of the bandwidth limit (probe / 25 GB/s) |")
    print("|---|---|---|---|---|---|")
    if not args.decode_only:
        default = f"rwkvjax wkv={resolve('auto').value}"
        for name in (k for k in pre if k != "official"):
            tag = " (default on this backend)" if name == default else ""
            print(f"| prefill T={T}, B=1, all logits, {name[8:]}{tag} | {tps(pre['official'], T):.1f} | "
                  f"{tps(pre[name], T):.1f} | {ratio(pre[name], pre['official']):.2f}x | | |")
    for name in (k for k in dec if k != "official"):
        mb = nbytes[name] / 1e6
        pct = lambda gbs: 100 * tps(dec[name]) * nbytes[name] / (gbs * 1e9)
        print(f"| decode B=1, {name} | {tps(dec['official']):.1f} | {tps(dec[name]):.1f} | "
              f"{ratio(dec[name], dec['official']):.2f}x | {mb:.0f} MB | {pct(bw):.0f}% / {pct(25):.0f}% |")
    off_pct = lambda gbs: 100 * tps(dec["official"]) * nbytes["loop fp32"] / (gbs * 1e9)
    print(f"official: {nbytes['loop fp32'] / 1e6:.0f} MB per token, {off_pct(bw):.0f}% / {off_pct(25):.0f}% "
          "of the limit")
    if not args.decode_only:
        flops = matmul_flops_per_token(cfg)
        best = max((k for k in pre if k != "official"), key=lambda k: tps(pre[k], T))
        pct = lambda name: 100 * tps(pre[name], T) * flops / (gflops * 1e9)
        print(f"\nmatmul bound: {gflops:.1f} GFLOP/s x {flops / 1e6:.0f} MFLOP/token of matmuls -> "
              f"{gflops * 1e9 / flops:.0f} tok/s; prefill at {pct(best):.0f}% ({best}) and {pct('official'):.0f}% "
              f"(official) of it")


if __name__ == "__main__":
    main()
