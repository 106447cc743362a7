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

from benchmarks.common.checkpoints import C, L, N, V, random_checkpoint

# Read by rwkv.model at import time (rwkv 0.8.32, rwkv/model.py).
os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ["RWKV_JIT_ON"] = "1"
os.environ.pop("RWKV_DE_VERSION", None)

OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
SEED = 20261123
T = 23  # odd, not a multiple of any chunk size


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
