"""Base models against general compressors on text none of them was trained on: files of held-out packages
(whole packages the pretraining never saw) and the Claude Code sessions, each compressed / scored alone.

    PYTHONPATH=. .venv/bin/python benchmarks/base_vs_compressors.py --model A.safetensors [--model B ...]
        [--package site-packages/networkx ...] [--files 40] [--copy-lengths 16,64,256,1024,4096]

Every file is read from the zero state (bits per byte = total bits / total bytes). The copy test scores a chunk
followed by an exact copy of it, from the zero state: a model that reads its context pays far less for the copy.
Chunks are cut at random offsets from the first package's sampled files joined (so a chunk does not repeat
itself, as one short file tiled to 4 KB would), `--copy-samples` per length; xz -9e's price for the same copies
stands beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])


def heldout_packages() -> list[str]:
    """The packages the shipped base model's pretraining held out, as its recipe records them."""
    recipe = Path(sys.path[0]) / "rwkvjax" / "data" / "base_model.recipe.json"
    return list(json.loads(recipe.read_text())["pretrain_config"]["heldout_packages"])


def copy_chunks(joined: bytes, lengths, samples: int, seed: int = 0) -> dict[int, list[bytes]]:
    """`samples` chunks of each length, cut at random offsets of `joined`."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return {n: [joined[o:o + n] for o in rng.integers(0, len(joined) - n, samples)] for n in lengths}


def copy_costs(params, config, chunks: dict[int, list[bytes]]) -> dict[int, dict[str, float]]:
    """Bits per byte of each chunk and of its exact copy right after it, from the zero state."""
    from rwkvjax.eval.scoring import score_stream
    from rwkvjax.model.state import zero_state
    from rwkvjax.text.tokenizer import for_vocab
    tok = for_vocab(config.vocab_size)
    out = {}
    for n, cs in chunks.items():
        first = second = 0.0
        for c in cs:
            ids = tok.encode(c.decode("utf-8", "replace"))
            nll, _ = score_stream(params, config, ids + ids, zero_state(config, 1))
            first += float(nll[:len(ids)].sum()) / math.log(2)
            second += float(nll[len(ids):].sum()) / math.log(2)
        out[n] = {"first_bpb": first / (n * len(cs)), "second_bpb": second / (n * len(cs))}
    return out


def main():
    root = Path(sys.path[0])
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--package", action="append", default=None)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--max-file-bytes", type=int, default=32768)
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--copy-lengths", default="16,64,256,1024,4096")
    ap.add_argument("--copy-samples", type=int, default=6)
    a = ap.parse_args()
    import sysconfig

    import rwkvjax
    from rwkvjax.eval.compressors import COMPRESSORS, alone_bits
    from rwkvjax.eval.scoring import score_stream
    from rwkvjax.eval.sessions import load_sessions
    from rwkvjax.model.state import zero_state
    from rwkvjax.text.tokenizer import for_vocab
    site = Path(sysconfig.get_paths()["purelib"])
    pkgs = a.package or heldout_packages()
    texts: dict[str, list[bytes]] = {}
    for p in pkgs:
        d = site / p.split("/", 1)[1]
        files = sorted(f for f in d.rglob("*.py") if f.is_file())
        step = max(1, len(files) // a.files)
        texts[p] = [f.read_bytes()[:a.max_file_bytes] for f in files[::step][:a.files]]
    tok0 = for_vocab(256)
    texts["claude-sessions"] = [s.text.encode() for s in load_sessions(a.traces, tok0)]
    out = {"files_per_package": a.files, "max_file_bytes": a.max_file_bytes, "sets": {}}
    for name, items in texts.items():
        nb = sum(len(b) for b in items)
        row = {"files": len(items), "bytes": nb}
        for c in COMPRESSORS:
            row[c] = sum(alone_bits(c, b) for b in items) / nb
        out["sets"][name] = row
    chunks = copy_chunks(b"".join(texts[pkgs[0]]), map(int, a.copy_lengths.split(",")), a.copy_samples)
    out["copy"] = {"xz -9e": {n: {"second_bpb": sum(alone_bits("xz -9e", c + c) - alone_bits("xz -9e", c)
                                                     for c in cs) / (n * len(cs))} for n, cs in chunks.items()}}
    for m in a.model:
        loaded = rwkvjax.load(m)
        config, params = loaded.arch, loaded.params
        tok = loaded.tokenizer
        for name, items in texts.items():
            bits = 0.0
            for b in items:
                ids = tok.encode(b.decode("utf-8", "replace"))
                if ids:
                    nll, _ = score_stream(params, config, ids, zero_state(config, 1))
                    bits += float(nll.sum()) / math.log(2)
            out["sets"][name][Path(m).name] = bits / out["sets"][name]["bytes"]
        out["copy"][Path(m).name] = copy_costs(params, config, chunks)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
