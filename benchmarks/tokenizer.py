"""World tokenizer speed: rwkvjax's WorldTokenizer vs the official `rwkv.rwkv_tokenizer.TRIE_TOKENIZER`.

    PYTHONPATH=. .venv/bin/python benchmarks/tokenizer.py [--repeats 5]

Text: every string in every JSONL line of ../shared/data/claude-projects (text, thinking, tool inputs/outputs),
encoded one string at a time (as ingestion does) and as one newline-joined blob. Both tokenizers run in the same
process on the same text, interleaved; figures are the best of the repeats. Also reports vocab load time (cold, uncached)
and decode speed. "cold memo" clears the chunk memo before each run (first sight of the text); "no memo" is the
plain trie walk alone. Checks that both tokenizers give identical ids before timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rwkvjax.text import world as world_tokenizer  # noqa: E402
from rwkvjax.text.world import WorldTokenizer  # noqa: E402

CLAUDE_PROJECTS = REPO.parent / "shared" / "data" / "claude-projects"


def strings(obj, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            strings(v, out)


def corpus() -> list[str]:
    out: list[str] = []
    for path in sorted(CLAUDE_PROJECTS.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                strings(json.loads(line), out)
    if not out:
        raise FileNotFoundError(f"no .jsonl text under {CLAUDE_PROJECTS}: ../shared/data must sit next to the repo")
    return out


def best_seconds(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Interleave the two so both see the same background load; best-of-N is least disturbed by other jobs."""
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times_a), min(times_b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    texts = [t.encode("utf-8") for t in corpus()]
    blob = b"\n".join(texts)
    n_bytes = sum(map(len, texts))

    t0 = time.perf_counter()
    ours = WorldTokenizer()
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    official = TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"))
    load_official = time.perf_counter() - t0

    ids = [ours.encode_bytes(t) for t in texts]
    if ids != [official.encodeBytes(t) for t in texts] or ours.encode_bytes(blob) != official.encodeBytes(blob):
        raise SystemExit("WorldTokenizer and TRIE_TOKENIZER disagree: fix that before timing")
    n_tokens = sum(map(len, ids))
    blob_ids = ours.encode_bytes(blob)

    rows = [
        ("encode, per string", lambda: [ours.encode_bytes(t) for t in texts],
         lambda: [official.encodeBytes(t) for t in texts], n_bytes),
        ("encode, one blob", lambda: ours.encode_bytes(blob), lambda: official.encodeBytes(blob), len(blob)),
        ("encode, blob, cold memo", lambda: (ours._chunk_ids.clear(), ours.encode_bytes(blob)),
         lambda: official.encodeBytes(blob), len(blob)),
        ("encode, blob, no memo", lambda: ours._walk(blob), lambda: official.encodeBytes(blob), len(blob)),
        ("decode, one blob", lambda: ours.decode_bytes(blob_ids), lambda: official.decodeBytes(blob_ids), len(blob)),
    ]
    print(f"text: {len(texts)} strings, {n_bytes / 1e6:.2f} MB UTF-8, {n_tokens} tokens "
          f"({n_bytes / n_tokens:.2f} bytes/token); best of {args.repeats}, interleaved")
    print(f"vocab load (cold): rwkvjax {load_ours:.2f} s, official {load_official:.2f} s")
    print(f"{'':24s} {'rwkvjax MB/s':>13s} {'official MB/s':>14s} {'ratio':>6s} {'rwkvjax Mtok/s':>15s}")
    for name, f_ours, f_official, size in rows:
        s_ours, s_official = best_seconds(f_ours, f_official, args.repeats)
        tok_rate = (n_tokens if "per string" in name else len(blob_ids)) / s_ours / 1e6
        print(f"{name:24s} {size / s_ours / 1e6:13.2f} {size / s_official / 1e6:14.2f} "
              f"{s_official / s_ours:6.2f} {tok_rate:15.2f}")
    world_tokenizer._load.cache_clear()
    t0 = time.perf_counter()
    WorldTokenizer()
    print(f"vocab load again after cache_clear: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
