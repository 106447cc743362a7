"""Regenerate the golden parity fixtures with BlinkDL's official `rwkv` package (https://pypi.org/project/rwkv/).

Needs the `[reference]` extra (torch + rwkv==0.8.32). Run once from the repo root and commit the outputs:

    PYTHONPATH=. .venv/bin/python tests/tools/make_golden.py

Writes to tests/data/golden/:
  tiny.safetensors  a random official-format RWKV-7 checkpoint (every key of rwkvjax/model/params.py, fp32 values,
                    realistic init formulas but random non-zero LoRAs and output weights);
  tiny_golden.npz   token ids, the official model's `cpu fp32` logits (sequence mode, one-token mode,
                    random non-zero initial WKV state) and final states for each mode, its `cpu bf16`
                    sequence logits (the accuracy bar for rwkvjax's bf16 weights), and the sha256 of
                    tiny.safetensors so the pair cannot drift apart.
The official model reads the same tensors saved as a `.pth` in a temporary folder; the `.pth` is not
committed (size budget): tests/io/test_loaders_formats.py re-saves it from the safetensors with torch.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

# Read by rwkv.model at import time (rwkv 0.8.32, rwkv/model.py).
os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ["RWKV_JIT_ON"] = "1"
os.environ.pop("RWKV_DE_VERSION", None)

OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
SEED = 20261123
# Small enough that the committed files stay under 3 MB; H = 2 heads of N = 64, L = 3 so that layers
# >= 1 exercise the value residual, V > 256 and F != 4C so no dimension is confused with another.
L, C, N, F, V = 3, 128, 64, 256, 384
D_DECAY, D_AAA, D_MV, D_GATE = 32, 32, 16, 48
T = 23  # odd, not a multiple of any chunk size


def random_checkpoint(rng: np.random.Generator, *, L=L, C=C, N=N, F=F, V=V, D_DECAY=D_DECAY, D_AAA=D_AAA,
                      D_MV=D_MV, D_GATE=D_GATE) -> dict[str, np.ndarray]:
    """Every official x070 tensor (rwkvjax/model/params.py), in official names and PyTorch layout, float32.

    Defaults are the golden fixture's dimensions; benchmarks/forward.py asks for 0.1B-shaped ones."""
    H = C // N
    n = np.arange(C)
    ddd = n / C
    linear = n / (C - 1) - 0.5
    zz = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zz * np.abs(zz)
    normal = lambda *shape, std: rng.normal(0.0, std, shape)
    jitter = lambda x, s=0.02: x + normal(*np.shape(x), std=s)
    vec = lambda x: np.asarray(x, np.float64).reshape(1, 1, C)

    sd: dict[str, np.ndarray] = {
        "emb.weight": normal(V, C, std=1.0).astype(np.float32),
        "blocks.0.ln0.weight": jitter(np.ones(C), 0.1), "blocks.0.ln0.bias": normal(C, std=0.1),
        "ln_out.weight": jitter(np.ones(C), 0.1), "ln_out.bias": normal(C, std=0.1),
        "head.weight": normal(V, C, std=0.5 / np.sqrt(C) * 4).astype(np.float32),
    }
    for i in range(L):
        p = f"blocks.{i}."
        r01, r10 = i / (L - 1), 1.0 - i / L
        www = -6 + 6 * (n / (C - 1)) ** (1 + r01 ** 0.3)
        t = {
            "ln1.weight": jitter(np.ones(C), 0.1), "ln1.bias": normal(C, std=0.1),
            "ln2.weight": jitter(np.ones(C), 0.1), "ln2.bias": normal(C, std=0.1),
            "att.x_r": vec(jitter(1 - ddd ** (0.2 * r10))), "att.x_w": vec(jitter(1 - ddd ** (0.9 * r10))),
            "att.x_k": vec(jitter(1 - ddd ** (0.7 * r10))), "att.x_v": vec(jitter(1 - ddd ** (0.7 * r10))),
            "att.x_a": vec(jitter(1 - ddd ** (0.9 * r10))), "att.x_g": vec(jitter(1 - ddd ** (0.2 * r10))),
            "att.w0": vec(jitter(www + 0.5 + 2.5 * zigzag, 0.1)),
            "att.w1": normal(C, D_DECAY, std=1 / np.sqrt(C)), "att.w2": normal(D_DECAY, C, std=0.5 / np.sqrt(D_DECAY)),
            "att.a0": vec(jitter(-0.19 + 0.3 * zigzag + 0.4 * linear, 0.1)),
            "att.a1": normal(C, D_AAA, std=1 / np.sqrt(C)), "att.a2": normal(D_AAA, C, std=0.5 / np.sqrt(D_AAA)),
            "att.v0": vec(jitter(0.73 - 0.4 * linear, 0.1)),
            "att.v1": normal(C, D_MV, std=1 / np.sqrt(C)), "att.v2": normal(D_MV, C, std=0.5 / np.sqrt(D_MV)),
            "att.g1": normal(C, D_GATE, std=1 / np.sqrt(C)), "att.g2": normal(D_GATE, C, std=0.5 / np.sqrt(D_GATE)),
            "att.k_k": vec(jitter(0.71 - 0.1 * linear)), "att.k_a": vec(jitter(np.full(C, 1.02))),
            "att.r_k": jitter(np.full((H, N), -0.04), 0.1),
            "att.receptance.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.key.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.value.weight": normal(C, C, std=1 / np.sqrt(C)),
            "att.output.weight": normal(C, C, std=0.5 / np.sqrt(C)),
            "att.ln_x.weight": jitter(np.full(C, ((i + 1) / L) ** 0.7), 0.1), "att.ln_x.bias": normal(C, std=0.05),
            "ffn.x_k": vec(jitter(1 - ddd ** (r10 ** 4))),
            "ffn.key.weight": normal(F, C, std=1 / np.sqrt(C)),
            "ffn.value.weight": normal(C, F, std=0.5 / np.sqrt(F)),
        }
        sd.update({p + k: np.asarray(v, np.float32) for k, v in t.items()})  # float32 early: 0.1B is large
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def state_arrays(state, prefix: str) -> dict[str, np.ndarray]:
    """Official state list (3 per layer) -> stacked [L, ...] float32 arrays."""
    pick = lambda j: np.stack([state[3 * i + j].float().numpy() for i in range(L)])
    return {f"{prefix}_att_shift": pick(0), f"{prefix}_wkv": pick(1), f"{prefix}_ffn_shift": pick(2)}


def main() -> None:
    import torch
    from rwkv.model import RWKV
    from safetensors.numpy import save_file

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    sd = random_checkpoint(rng)
    tokens = rng.integers(0, V, T)
    S0 = rng.normal(0.0, 0.5, (L, C // N, N, N)).astype(np.float32)  # official [H, N_value, N_key]

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    st_path = OUT_DIR / "tiny.safetensors"
    save_file(sd, str(st_path))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, f"{tmp}/tiny.pth")
        # The strategy's dtype is a module global in rwkv.model: run the bf16 model to completion
        # before building the fp32 one.
        ids = [int(t) for t in tokens]
        model_bf16 = RWKV(model=f"{tmp}/tiny", strategy="cpu bf16")  # pip appends ".pth"
        bf16_logits, _ = model_bf16.forward(ids, None, full_output=True)
        model = RWKV(model=f"{tmp}/tiny", strategy="cpu fp32")
    zero = model.generate_zero_state()

    out: dict[str, np.ndarray] = {"tokens": tokens.astype(np.int32), "S0": S0}
    logits, st = model.forward(ids, copy.deepcopy(zero), full_output=True)
    out["seq_logits"] = logits.float().numpy()
    out.update(state_arrays(st, "seq"))

    st, steps = copy.deepcopy(zero), []
    for t in ids:
        logits, st = model.forward(t, st)
        steps.append(logits.float().numpy())
    out["one_logits"] = np.stack(steps)
    out.update(state_arrays(st, "one"))

    st = copy.deepcopy(zero)
    for i in range(L):
        st[3 * i + 1] = torch.from_numpy(S0[i].copy())
    logits, st = model.forward(ids, st, full_output=True)
    out["s0_logits"] = logits.float().numpy()
    out.update(state_arrays(st, "s0"))

    out["bf16_seq_logits"] = bf16_logits.float().numpy()

    out["safetensors_sha256"] = np.array(hashlib.sha256(st_path.read_bytes()).hexdigest())
    np.savez_compressed(OUT_DIR / "tiny_golden.npz", **out)
    for k, v in out.items():
        print(f"{k:22s} {v.shape} {v.dtype}" + (f" std {v.std():.3g}" if v.dtype == np.float32 else ""))
    print(f"wrote {st_path} and {OUT_DIR / 'tiny_golden.npz'}", file=sys.stderr)


if __name__ == "__main__":
    main()
