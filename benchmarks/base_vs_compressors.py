"""Base models against general compressors on text none of them was trained on: files of held-out packages
(whole packages the pretraining never saw) and the Claude Code sessions, each compressed / scored alone.

    PYTHONPATH=. .venv/bin/python benchmarks/base_vs_compressors.py --model A.safetensors [--model B ...]
        [--package site-packages/networkx ...] [--files 40] [--copy-bytes 4096]

Every file is read from the zero state (bits per byte = total bits / total bytes). The copy test scores a 4 KB
chunk followed by an exact copy of it: a model that reads its context pays far less for the copy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])


def main():
    root = Path(sys.path[0])
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--package", action="append", default=None)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--max-file-bytes", type=int, default=32768)
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--copy-bytes", type=int, default=4096)
    a = ap.parse_args()
    import sysconfig

    import rwkvjax
    from rwkvjax.eval.compressors import COMPRESSORS, alone_bits
    from rwkvjax.eval.scoring import score_stream
    from rwkvjax.eval.sessions import load_sessions
    from rwkvjax.model.state import zero_state
    from rwkvjax.text.tokenizer import for_vocab
    site = Path(sysconfig.get_paths()["purelib"])
    pkgs = a.package or ["site-packages/networkx", "site-packages/hypothesis", "site-packages/huggingface_hub"]
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
    sample = texts[pkgs[0]][0] * 8
    chunk = sample[:a.copy_bytes]
    for m in a.model:
        config, params = rwkvjax.load(m)
        tok = for_vocab(config.vocab_size)
        for name, items in texts.items():
            bits = 0.0
            for b in items:
                ids = tok.encode(b.decode("utf-8", "replace"))
                if ids:
                    nll, _ = score_stream(params, config, ids, zero_state(config, 1))
                    bits += float(nll.sum()) / math.log(2)
            out["sets"][name][Path(m).name] = bits / out["sets"][name]["bytes"]
        ids = tok.encode(chunk.decode("utf-8", "replace"))
        nll, _ = score_stream(params, config, ids + ids, zero_state(config, 1))
        n = len(ids)
        out.setdefault("copy", {})[Path(m).name] = {
            "first_bpb": float(nll[:n].sum() / math.log(2) / len(chunk)),
            "second_bpb": float(nll[n:].sum() / math.log(2) / len(chunk))}
    out["copy"]["xz -9e second_bpb"] = (alone_bits("xz -9e", chunk + chunk) - alone_bits("xz -9e", chunk)) / len(chunk)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
