"""Which model size learns most on this CPU in a fixed time? Byte-level configs pretrained from scratch with
the same recipe and (about) the same wall time each, then scored on the held-out packages.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 PYTHONPATH=. .venv/bin/python benchmarks/model_size.py \
        [--configs 2x128,4x256,6x256,4x384] [--minutes 8] [--out runs/model_size]

Each config's step count is set from a timed step (benchmarks/pretrain.py `run_case`: median of 5 after 2 warm-up
steps) so that its training takes about `--minutes`; the table reports the wall time it really took and the
tokens it saw. The recipe is the base model's (rwkvjax/data/base_model.recipe.json): ctx 512, 4 windows per
segment, copy segments, chunked WKV, no remat, held-out packages networkx/hypothesis/huggingface_hub, scored
with the state carried per file (`cli.py pretrain`'s own evaluation); copying is scored as in
benchmarks/base_vs_compressors.py (held-out hypothesis text, a chunk then its copy, 64 and 256 bytes).
One JSON line per config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.base_vs_compressors import copy_chunks, copy_costs, heldout_packages  # noqa: E402
from benchmarks.pretrain import run_case  # noqa: E402
from rwkvjax.train.config import PretrainConfig  # noqa: E402
from rwkvjax.train.pretrain import pretrain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="2x128,4x256,6x256,4x384")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--max-bytes", type=int, default=100_000_000, help="corpus bytes read (the held-out "
                    "packages are chosen by name, so they are the same at any size)")
    ap.add_argument("--out", default="runs/model_size")
    a = ap.parse_args()
    import sysconfig

    import rwkvjax
    site = Path(sysconfig.get_paths()["purelib"]) / "hypothesis"
    chunks = copy_chunks(b"".join(f.read_bytes() for f in sorted(site.rglob("*.py"))[::7]), (64, 256), 6)
    for spec in a.configs.split(","):
        L, C = map(int, spec.split("x"))
        timed = run_case(L, C, a.ctx, a.batch, "chunked", False)
        steps = max(a.windows, int(a.minutes * 60 / timed["step_s"]) // a.windows * a.windows)
        cfg = PretrainConfig(out=str(Path(a.out) / spec), n_layer=L, n_embd=C, ctx_len=a.ctx,
                             windows_per_segment=a.windows, copy_prob=0.5, copy_noise=0.5, batch=a.batch,
                             steps=steps, lr=1.5e-3, lr_final=1e-4, warmup=20,
                             heldout_packages=tuple(heldout_packages()), eval_every=steps, save_every=steps, max_bytes=a.max_bytes,
                             wkv_impl="chunked")
        t0 = time.perf_counter()
        rec = pretrain(cfg, log=lambda s: None)
        wall = time.perf_counter() - t0
        loaded = rwkvjax.load(rec["model"])
        config, params = loaded.arch, loaded.params
        copies = copy_costs(params, config, chunks)
        print(json.dumps({"L": L, "C": C, "params": timed["params"], "steps": steps,
                          "tokens": rec["tokens_seen"], "train_wall_s": round(wall),
                          "timed_step_s": timed["step_s"],
                          "heldout_bpb": round(rec["heldout_bits_per_byte"], 4),
                          "copy_1k_first_bits": round(rec["copy_first_bits_per_token"], 4),
                          "copy_1k_second_bits": round(rec["copy_second_bits_per_token"], 4),
                          "copy_bpb": {n: {k: round(v, 4) for k, v in c.items()} for n, c in copies.items()},
                          "config": dataclasses.asdict(cfg.model_config())}), flush=True)


if __name__ == "__main__":
    main()
