"""Can a small RWKV-7 learn to copy on this CPU, and how fast? A pure synthetic copy task, all weights trained.

    PYTHONPATH=. .venv/bin/python benchmarks/copy_task.py [--n-embd 128] [--n-layer 2] [--steps 2000]

Each row: a separator, n random symbols (16 of them, 4 bits each), "|", the same n symbols again. Only the
earlier copy predicts the second, so its cost falls below 4 bits/symbol exactly as far as the model copies from
its state. Rows are read from the zero state, the pretraining optimizer and step are the ones `cli.py pretrain`
uses (`rwkvjax/train/pretrain.py`). One line every 50 steps: bits per symbol of both halves on that step's batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rwkvjax.model.init import init_params  # noqa: E402
from rwkvjax.model.state import zero_state  # noqa: E402
from rwkvjax.train import pretrain as pt  # noqa: E402
from rwkvjax.train.config import PretrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--length", type=int, default=24, help="symbols per copy")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    n, B = a.length, a.batch
    cfg = PretrainConfig(out="unused", n_layer=a.n_layer, n_embd=a.n_embd, ctx_len=2 * n + 1, batch=B,
                         steps=a.steps, lr=3e-3, lr_final=3e-4, warmup=20, weight_decay=0.0, wkv_impl="chunked")
    config = cfg.model_config()
    params = init_params(config, 0)
    tx = pt.pretrain_optimizer(cfg)
    opt = tx.init(params)
    step_fn, eval_window = pt.make_steps(config, tx, cfg)
    mask = jnp.ones((B, 2 * n + 1), jnp.float32)
    rng = np.random.default_rng(0)
    t0 = time.time()
    for s in range(a.steps):
        sym = rng.integers(65, 81, (B, n))  # 'A'..'P'
        row = np.concatenate([np.zeros((B, 1), int), sym, np.full((B, 1), ord("|")), sym], 1).astype(np.int32)
        x, y = jnp.asarray(row[:, :-1]), jnp.asarray(row[:, 1:])
        params, opt, _, _ = step_fn(params, opt, zero_state(config, B), x, y)
        if s % 50 == 0 or s == a.steps - 1:
            bits, _ = eval_window(params, zero_state(config, B), x, y, mask)
            bits = np.asarray(bits)
            print(f"step {s}: first copy {bits[:, :n].mean():.3f} bits/symbol, second copy "
                  f"{bits[:, n + 1:].mean():.3f}  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
