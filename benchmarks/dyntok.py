"""Dynamic-tokenizer compression and throughput on real Claude Code sessions.

    PYTHONPATH=. .venv/bin/python benchmarks/dyntok.py [--source ../shared/data/claude-projects] [--vocab 65536]

Text: every user/assistant message block of every session (text, thinking, tool_use input as JSON,
tool_result content), in file order; sessions joined by id 0 (end of text). The base-token stream is
fed to the dynamic tokenizer in segments of --segment base tokens (one training chunk each).
Reports recurrent steps per base token and MB/s (UTF-8 text bytes per second) for the dynamic
tokenizer alone and for base tokenization + dynamic tokenizer. Every segment is decoded back and
checked against its base tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rwkvjax.merges.dyntok import DynamicTokenizer, DynTokSettings, digit_protected
from rwkvjax.text.tokenizer import for_vocab

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "claude-projects"


def block_texts(content) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for b in content or []:
        t = b.get("type")
        if t == "text":
            out.append(b["text"])
        elif t == "thinking":
            out.append(b["thinking"])
        elif t == "tool_use":
            out.append(json.dumps(b.get("input"), ensure_ascii=False))
        elif t == "tool_result":
            out.extend(block_texts(b.get("content")))
    return out


def session_texts(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: not JSON ({e})")
            if row.get("type") in ("user", "assistant") and isinstance(row.get("message"), dict):
                texts.extend(block_texts(row["message"].get("content")))
    return texts


def _median_time(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--vocab", type=int, default=65536, help="256 = bytes, 65536 = RWKV World")
    ap.add_argument("--segment", type=int, default=1024, help="base tokens per encode() call")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--slots", type=int, default=256)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported (shared CPU)")
    args = ap.parse_args(argv)

    files = sorted(args.source.rglob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.source}: no .jsonl session files found")
    base = for_vocab(args.vocab)
    texts = [session_texts(p) for p in files]
    n_bytes = sum(len(t.encode("utf-8")) for s in texts for t in s)

    def tokenize_all():
        out: list[int] = []
        for s in texts:
            for t in s:
                out.extend(base.encode(t))
            out.append(0)
        return out

    t_base, stream = _median_time(tokenize_all, args.repeat)

    protected = digit_protected(base.decode_bytes, args.vocab)
    cfg = DynTokSettings(v_base=args.vocab, window=args.window, threshold=args.threshold, n_slots=args.slots,
                         protected=protected)
    segs = [stream[i:i + args.segment] for i in range(0, len(stream), args.segment)]

    def encode_all():
        tok = DynamicTokenizer(cfg, base.decode_bytes)
        return tok, [tok.encode(s) for s in segs]

    t_dyn, (tok, encoded) = _median_time(encode_all, args.repeat)
    for s, e in zip(segs, encoded):
        if e.decode() != s:
            raise SystemExit("round trip failed: decode(encode(x)) != x")

    st = tok.stats(args.top)
    mb = n_bytes / 1e6
    result = {
        "files": len(files), "text_MB": round(mb, 3), "base_tokens": st["base_tokens"],
        "recurrent_steps": st["recurrent_steps"],
        "steps_per_base_token": round(st["steps_per_base_token"], 4),
        "recent_steps_per_base_token": round(st["recent_steps_per_base_token"], 4),
        "reduction_pct": round(100 * (1 - st["steps_per_base_token"]), 2),
        "promotions": st["promotions"], "evictions": st["evictions"], "merges": st["merges"],
        "deferred_promotions": st["deferred_promotions"], "protected_ids": len(protected),
        "dyntok_MB_per_s": round(mb / t_dyn, 3), "base_tokenizer_MB_per_s": round(mb / t_base, 3),
        "end_to_end_MB_per_s": round(mb / (t_dyn + t_base), 3),
        "settings": {"vocab": args.vocab, "segment": args.segment, "window": args.window,
                     "threshold": args.threshold, "slots": args.slots},
        "top_merges": [(m["text"], m["uses"]) for m in st["top_merges"]],
    }
    json.dump(result, sys.stdout, indent=1, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
