"""Int8 weight-only quantization vs fp32: held-out bits per byte of the shipped demo model and logit errors.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_accuracy.py [--files 16] [--max-bytes 400000]

1. The demo model (`rwkvjax/data/demo_model.safetensors`, byte-level, bf16 on disk, so "fp32" is those values
   widened exactly) scores standard-library files it never trained on: the per-file split it was trained with
   (every 20th file by path hash held out, rwkvjax/data/README.md), the first `--files` held-out `.py` files of
   2-64 KB in path order. Bits per byte from the zero state, each file on its own, fp32 vs int8 (quantized on
   load, the same tensors `convert --dtype int8` writes).
2. A random 0.1B-shaped model (benchmarks/forward.py's): max and mean |logit difference| int8 vs fp32 over 256
   random tokens, and top-1 agreement; bf16 weights vs fp32 for scale (random nets amplify weight rounding).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rwkvjax  # noqa: E402
from benchmarks.common.checkpoints import random_checkpoint  # noqa: E402
from benchmarks.forward import SHAPE_0_1B, logit_error  # noqa: E402
from rwkvjax.eval.scoring import score_stream  # noqa: E402
from rwkvjax.model.params import from_official  # noqa: E402
from rwkvjax.train.corpus import _is_heldout, corpus_files  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "rwkvjax" / "data" / "demo_model.safetensors"


def heldout_files(n: int) -> list[Path]:
    """Standard-library `.py` files the demo model held out (its per-file split, every 20th by path hash)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    picked = [f for f in corpus_files([root]) if f.suffix == ".py" and _is_heldout(f, 20)
              and 2_000 <= f.stat().st_size <= 64_000]
    return picked[:n]


def bits_per_byte(params, cfg, texts: list[bytes]) -> float:
    bits = sum(float(score_stream(params, cfg, np.frombuffer(t, np.uint8).astype(np.int32),
                                  rwkvjax.zero_state(cfg, 1))[0].sum()) / np.log(2) for t in texts)
    return bits / sum(len(t) for t in texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--max-bytes", type=int, default=400_000, help="stop adding files past this many bytes")
    args = ap.parse_args()

    files, texts = [], []
    for f in heldout_files(args.files):
        if sum(map(len, texts)) >= args.max_bytes:
            break
        files.append(f)
        texts.append(f.read_bytes())
    print(f"demo model, {len(files)} held-out stdlib files, {sum(map(len, texts))} bytes: "
          + ", ".join(f.name for f in files))
    loaded = rwkvjax.load(DEMO)
    cfg, fp32 = loaded.arch, loaded.params
    int8 = rwkvjax.load(DEMO, dtype="int8").params
    b32, b8 = bits_per_byte(fp32, cfg, texts), bits_per_byte(int8, cfg, texts)
    print(f"| demo model held-out | fp32 | int8 | int8 vs fp32 |\n|---|---|---|---|\n"
          f"| bits per byte | {b32:.4f} | {b8:.4f} | {100 * (b8 - b32) / b32:+.3f}% |")
    toks = np.frombuffer(texts[0][:512], np.uint8).astype(np.int32)
    e = logit_error(fp32, int8, cfg, toks)
    print(f"demo model logits ({len(toks)} bytes of {files[0].name}): max |d| {e['max']:.4f}, mean |d| "
          f"{e['mean']:.5f} (logit std {e['std']:.3f}), top-1 agreement {e['top1']:.3f}")

    rng = np.random.default_rng(0)
    sd = random_checkpoint(rng, **SHAPE_0_1B)
    cfg, fp32 = from_official(sd, source="random 0.1B")
    _, int8 = from_official(sd, dtype=jnp.int8, source="random 0.1B")
    _, bf16 = from_official(sd, dtype=jnp.bfloat16, source="random 0.1B")
    del sd
    toks = rng.integers(0, cfg.vocab_size, 256).astype(np.int32)
    for name, other in (("int8", int8), ("bf16", bf16)):
        e = logit_error(fp32, other, cfg, toks)
        print(f"random 0.1B logits, {name} vs fp32 (256 random tokens): max |d| {e['max']:.4f}, mean |d| "
              f"{e['mean']:.5f} (logit std {e['std']:.3f}: {e['max'] / e['std']:.4f} / {e['mean'] / e['std']:.5f} "
              f"of it), top-1 agreement {e['top1']:.3f}")


if __name__ == "__main__":
    main()
