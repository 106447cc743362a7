"""rwkvjax next to its peers in one run: rwkv-ops (JAX backend) at the WKV op, the official `rwkv` package at the model.

    PYTHONPATH=. .venv/bin/python benchmarks/peers.py [--rounds 21] [--grad-rounds 3] [--model-rounds 3]
                                                      [--shapes "1,4096,12,64;8,512,12,64"] [--torch-threads N]
                                                      [--write benchmarks/RESULTS.md]

Needs the `bench` extra (rwkv-ops, keras) and the `reference` extra (torch, rwkv==0.8.32):
`pip install -e ".[bench,reference]"`. Before anything is timed it checks that the peers compute the same x070
recurrence as rwkvjax (and fails otherwise):

- rwkv-ops `generalized_delta_rule(r, w, k, v, a, b, initial_state)` takes the decay in log-log form
  (decay = exp(-exp(w)), so w = log(-log_w), converted once before any timing: each library gets its own input
  form), a = -kk, b = kk*iclr as rwkvjax does, and a [value, key] state. Its y and final state are compared with
  the float64 per-token reference (benchmarks/common/wkv_reference.py), and so are rwkvjax's; a transposed initial
  state is fed once as a control that the comparison can tell the layouts apart.
- the official package runs a random 0.1B-shaped checkpoint (benchmarks/forward.py's) and its prefill logits are
  compared with rwkvjax's on the same weights.

Timings: every system is called in turn within each round (same machine load for all), compilation and warm-up
excluded, `block_until_ready`; a ratio is the median over rounds of (peer time / rwkvjax time), with the lowest and
highest round in brackets. On CPU rwkv-ops' JAX backend is its pure-Keras per-token `fori_loop` (its Pallas, Triton
and CUDA kernels need a GPU). `--write` replaces the block between the `peers.py` markers in the given file.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["KERAS_BACKEND"] = "jax"  # read once when rwkv_ops / keras are imported
os.environ.setdefault("KERNEL_TYPE", "native")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rwkvjax  # noqa: E402
from benchmarks.common.checkpoints import random_checkpoint  # noqa: E402
from benchmarks.common.wkv_reference import reference_f64, rel_err, rwkv_inputs  # noqa: E402
from benchmarks.forward import SHAPE_0_1B, Official, Ours, interleaved  # noqa: E402  (sets the RWKV_* variables)
from benchmarks.wkv import fwd_bwd_fn, fwd_fn, make_inputs  # noqa: E402
from rwkvjax.model.params import from_official  # noqa: E402
from rwkvjax.model.wkv import resolve, wkv7, wkv7_scan  # noqa: E402
from rwkvjax.model.wkv_chunked import wkv7_chunked  # noqa: E402

SHAPES = [(1, 4096, 12, 64), (8, 512, 12, 64)]
BEGIN, END = "<!-- peers.py: begin -->", "<!-- peers.py: end -->"
PARITY_BAR = 1e-5  # float32 against the float64 reference, as tests/model/test_wkv.py holds rwkvjax


def rwkv_ops_wkv():
    """rwkv-ops' generalized delta rule on its own inputs: (r, w, k, v, a, b, s0) with w = log(-log_w)."""
    import rwkv_ops

    def call(r, w, k, v, a, b, s0):
        return rwkv_ops.generalized_delta_rule(r, w, k, v, a, b, initial_state=s0)

    return call, rwkv_ops


def to_rwkv_ops(xs):
    """rwkvjax's inputs (log decay) -> rwkv-ops' (log-log decay), converted once, outside every timing."""
    r, log_w, k, v, a, b, s0 = xs
    return jax.block_until_ready((r, jnp.log(-log_w), k, v, a, b, s0))


def rwkvjax_auto(r, log_w, k, v, a, b, s0):
    """What `score`, `eval`, prefill and training call: the dispatcher's default."""
    return wkv7(r, log_w, k, v, a, b, s0, impl="auto")


def check_wkv_parity(peer) -> list[str]:
    """Both against the float64 reference on realistic inputs; fails loudly if rwkv-ops computes something else."""
    lines = []
    xs = rwkv_inputs(11, 2, 100, 3, 64)
    zeros = (jnp.zeros(xs[0].shape), jnp.zeros(xs[6].shape))
    y_ref, sT_ref, _ = reference_f64(xs, *zeros)
    for name, f, args in (("rwkv-ops", peer, to_rwkv_ops(xs)), ("rwkvjax auto", rwkvjax_auto, xs)):
        y, sT = jax.jit(f)(*args)
        ey, es = rel_err(y, y_ref), rel_err(sT, sT_ref)
        lines.append(f"{name} vs float64 reference at (2, 100, 3, 64): y {ey:.1e}, s_T {es:.1e}")
        if max(ey, es) > PARITY_BAR:
            raise SystemExit(f"peers.py: {name} does not compute rwkvjax's recurrence ({lines[-1]})")
    swapped = to_rwkv_ops(xs[:6] + (jnp.swapaxes(xs[6], -1, -2),))
    y_sw, _ = jax.jit(peer)(*swapped)
    e_sw = rel_err(y_sw, y_ref)
    lines.append(f"control, rwkv-ops with the initial state transposed: y {e_sw:.1e} (so layouts are told apart)")
    if e_sw < 1e-2:
        raise SystemExit("peers.py: the parity check cannot tell a transposed state apart")
    return lines


def timed_rounds(fns: dict, rounds: int) -> dict[str, list[float]]:
    """fns: name -> (function, its inputs). Seconds per call for each, all called in turn within each round."""
    for f, xs in fns.values():
        jax.block_until_ready(f(*xs))  # compile + warm-up
    out = {n: [] for n in fns}
    for _ in range(rounds):
        for n, (f, xs) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*xs))
            out[n].append(time.perf_counter() - t0)
    return out


def ratio_cell(peer_s: list[float], ours_s: list[float]) -> str:
    rs = sorted(p / o for p, o in zip(peer_s, ours_s))
    return f"{statistics.median(rs):.2f}× [{rs[0]:.2f}–{rs[-1]:.2f}]"


def wkv_tables(peer, rounds: int, grad_rounds: int, shapes) -> list[str]:
    ours = {"rwkvjax auto (loop)": rwkvjax_auto, "rwkvjax scan (reference)": wkv7_scan,
            "rwkvjax chunked": wkv7_chunked}
    out = [f"WKV forward, float32, {rounds} rounds. Ratio = rwkv-ops time / this row's time (> 1: rwkvjax faster).",
           "", "| (B, T, H, N) | implementation | median ms | ratio vs rwkv-ops [min–max] |", "|---|---|---:|---:|"]
    for shape in shapes:
        xs = make_inputs(*shape)
        fns = {"rwkv-ops": (fwd_fn(peer), to_rwkv_ops(xs)), **{n: (fwd_fn(f), xs) for n, f in ours.items()}}
        t = timed_rounds(fns, rounds)
        for n in fns:
            cell = "—" if n == "rwkv-ops" else ratio_cell(t["rwkv-ops"], t[n])
            out.append(f"| {shape} | {n} | {statistics.median(t[n]) * 1e3:.0f} | {cell} |")
        print("\n".join(out[-len(fns):]), flush=True)
    if grad_rounds:
        out += ["", f"WKV forward+backward (gradients w.r.t. all seven inputs), float32, {grad_rounds} rounds. "
                "rwkvjax auto takes the chunked form's VJP.", "",
                "| (B, T, H, N) | implementation | median ms | ratio vs rwkv-ops [min–max] |", "|---|---|---:|---:|"]
        for shape in shapes:
            xs = make_inputs(*shape)
            fns = {"rwkv-ops": (fwd_bwd_fn(peer), to_rwkv_ops(xs)),
                   "rwkvjax auto (chunked VJP)": (fwd_bwd_fn(rwkvjax_auto), xs)}
            t = timed_rounds(fns, grad_rounds)
            for n in fns:
                cell = "—" if n == "rwkv-ops" else ratio_cell(t["rwkv-ops"], t[n])
                out.append(f"| {shape} | {n} | {statistics.median(t[n]) * 1e3:.0f} | {cell} |")
            print("\n".join(out[-len(fns):]), flush=True)
    return out


def model_table(rounds: int, prefill_T: int, torch_threads: int, seed: int = 0) -> list[str]:
    """Official `rwkv` vs rwkvjax on one random 0.1B-shaped checkpoint: logits parity, then interleaved prefill."""
    import torch
    from rwkv.model import RWKV

    if torch_threads:
        torch.set_num_threads(torch_threads)
    rng = np.random.default_rng(seed)
    sd = random_checkpoint(rng, **SHAPE_0_1B)
    tokens = rng.integers(0, SHAPE_0_1B["V"], prefill_T).astype(np.int32)
    cfg, params = from_official(sd, dtype=jnp.float32, source="random 0.1B")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, f"{tmp}/m.pth")
        del sd
        official = RWKV(model=f"{tmp}/m", strategy="cpu fp32")
    off = Official(official, tokens)
    ours = {i: Ours(params, cfg, tokens, i) for i in ("auto", "scan")}
    ref, _ = official.forward([int(t) for t in tokens], copy.deepcopy(off.zero), full_output=True)
    got, _ = rwkvjax.forward(params, jnp.asarray(tokens)[None], rwkvjax.zero_state(cfg, 1), config=cfg)
    ref = ref.float().numpy()
    err = float(np.max(np.abs(np.asarray(got[0]) - ref)) / np.max(np.abs(ref)))
    lines = [f"official vs rwkvjax prefill logits (T={prefill_T}, fp32): max|Δ|/max|logit| = {err:.1e}"]
    if err > 1e-4:
        raise SystemExit(f"peers.py: {lines[-1]}: not the same model")
    print(lines[-1], flush=True)
    t = interleaved({"official": off, **{f"rwkvjax {i}": o for i, o in ours.items()}}, "prefill", rounds)
    tps = lambda ts: prefill_T / statistics.median(ts)
    out = ["", f"Model prefill, random 0.1B-shaped x070 (L12, C768, V65536), B=1, T={prefill_T}, fp32, all logits; "
           f"official `rwkv` {_version('rwkv')} `cpu fp32` with torch {torch.__version__} on {torch.get_num_threads()} "
           f"thread(s); {rounds} rounds. {lines[0]}.", "",
           "| system | WKV | prefill tok/s (median) | ratio vs official [min–max] |", "|---|---|---:|---:|",
           f"| official `rwkv` | its TorchScript loop | {tps(t['official']):.1f} | — |"]
    for i in ours:
        label = f"auto → {resolve(i).value}" if i == "auto" else i
        out.append(f"| rwkvjax | {label} | {tps(t[f'rwkvjax {i}']):.1f} | "
                   f"{ratio_cell(t['official'], t[f'rwkvjax {i}'])} |")
    print("\n".join(out[-len(ours) - 1:]), flush=True)
    return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return f"{os.cpu_count()}-core CPU ({cpu}), {platform.system()} {platform.machine()}"


def write_block(path: Path, block: str) -> None:
    text = path.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Peers (`benchmarks/peers.py`)\n\n" + BEGIN + "\n" + block + "\n" + END + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21, help="rounds of the WKV forward timing")
    ap.add_argument("--grad-rounds", type=int, default=3, help="rounds of the WKV forward+backward timing (0: skip)")
    ap.add_argument("--model-rounds", type=int, default=3, help="rounds of the model prefill timing (0: skip)")
    ap.add_argument("--prefill-T", type=int, default=512)
    ap.add_argument("--torch-threads", type=int, default=0, help="0 keeps torch's default")
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES),
                    help="WKV shapes B,T,H,N separated by ';' (default: the two of issue 16)")
    ap.add_argument("--write", type=Path, help="replace the peers.py block of this markdown file with the tables")
    args = ap.parse_args()

    peer, rwkv_ops = rwkv_ops_wkv()
    load0 = os.getloadavg()
    header = [f"Command: `PYTHONPATH=. .venv/bin/python benchmarks/peers.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
              f"Date: {datetime.date.today().isoformat()}; machine: {machine_line()}; jax {jax.__version__}, "
              f"rwkv-ops {_version('rwkv-ops')} (keras {_version('keras')}, KERAS_BACKEND=jax, "
              f"generalized_delta_rule = {rwkv_ops.generalized_delta_rule.__module__}).", ""]
    print("\n".join(header), flush=True)
    parity = check_wkv_parity(peer)
    print("\n".join(parity), flush=True)
    body = ["Parity checked first:", ""] + [f"- {ln}" for ln in parity] + [""]
    shapes = [tuple(int(x) for x in sh.split(",")) for sh in args.shapes.split(";")]
    body += wkv_tables(peer, args.rounds, args.grad_rounds, shapes)
    if args.model_rounds:
        body += model_table(args.model_rounds, args.prefill_T, args.torch_threads)
    load1 = os.getloadavg()
    body += ["", f"Load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in load0)}, "
             f"at end {', '.join(f'{x:.1f}' for x in load1)}."]
    block = "\n".join(header + body)
    print("\n" + block)
    if args.write:
        write_block(args.write, block)
        print(f"\nwrote the table to {args.write}")


if __name__ == "__main__":
    main()
