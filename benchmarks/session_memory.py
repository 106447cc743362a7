"""How far back must a predictor remember to beat gzip on the sessions? Compressors given a bounded memory.

    PYTHONPATH=. .venv/bin/python benchmarks/session_memory.py [--block 512] [--memory 256,1024,4096,16384,all]

Each session (rendered and redacted as `eval` renders it) is cut into blocks; a block costs what the compressor
pays for it after reading only the `memory` bytes just before it (`primed_bits`, so container headers cancel out
except in a session's first block); `all` is the whole session read in order. This is the compressor's
counterpart of a model whose state can carry about that many bytes: it shows how much of the compressors' lead on
the sessions comes from repeats further back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])


def main() -> None:
    root = Path(sys.path[0])
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--memory", default="256,1024,4096,16384,all")
    ap.add_argument("--compressors", default="gzip -9,PPMd o6")
    a = ap.parse_args()
    from rwkvjax.eval.compressors import primed_bits
    from rwkvjax.eval.sessions import load_sessions
    from rwkvjax.text.tokenizer import for_vocab

    texts = [s.text.encode() for s in load_sessions(a.traces, for_vocab(256))]
    total = sum(map(len, texts))
    out = {"sessions": len(texts), "bytes": total, "block": a.block, "bits_per_byte": {}}
    for name in a.compressors.split(","):
        row = out["bits_per_byte"][name] = {}
        for mem in a.memory.split(","):
            bits = 0.0
            for t in texts:
                for s in range(0, len(t), a.block):
                    lo = 0 if mem == "all" else max(0, s - int(mem))
                    bits += primed_bits(name, t[s:s + a.block], t[lo:s])
            row[mem] = round(bits / total, 4)
            print(json.dumps({name: {mem: row[mem]}}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
