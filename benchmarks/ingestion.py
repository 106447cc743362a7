"""Ingestion benchmark: replay throughput over >= 100 MB of real transcripts, and RSS of a 100k-event live run.

    PYTHONPATH=. .venv/bin/python benchmarks/ingestion.py [--mb 100] [--live-events 100000] [--skip-live]

The fixture folder (../shared/data/claude-projects, 9 real sessions) is copied until the total reaches
--mb, with ids prefixed per copy so every copy is a distinct session (no de-duplication shortcuts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This file is named like the package it measures: keep its own folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from ingest.stream import BRIDGE, TraceStream  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "claude-projects"
_IDS = re.compile(rb'"(uuid|parentUuid|sessionId|agentId|id|tool_use_id|leafUuid|messageId)":"')


def build_corpus(root: Path, mb: float) -> tuple[int, int]:
    files = sorted(FIXTURE.rglob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no transcripts under {FIXTURE}")
    total, copies = 0, 0
    while total < mb * 1e6:
        for f in files:
            data = _IDS.sub(lambda m: m.group(0) + b"c%d-" % copies, f.read_bytes())
            out = root / f"-copy-{copies}" / f"c{copies}-{f.name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            total += len(data)
        copies += 1
    return total, copies


def _rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _replay(root: Path, **kw) -> tuple[int, float, dict]:
    t = time.perf_counter()
    n = 0
    async with TraceStream("replay", **kw) as s:
        async for _ in s:
            n += 1
        m = dict(s.metrics)
    return n, time.perf_counter() - t, m


def bench_replay(mb: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nbytes, copies = build_corpus(root, mb)
        t = time.perf_counter()
        subprocess.run(["node", str(BRIDGE), "--mode", "replay", "--dir", str(root)], stdout=subprocess.DEVNULL, check=True)
        bridge_s = time.perf_counter() - t
        n_cc, s_cc, m = asyncio.run(_replay(root, projects=root))
        n_py, s_py, _ = asyncio.run(_replay(root, paths=[root]))
        n_nr, s_nr, _ = asyncio.run(_replay(root, paths=[root], redactor=_NoRedact()))
    return {"bytes": nbytes, "copies": copies, "events": n_cc,
            "bridge_only_MBps": nbytes / bridge_s / 1e6,
            "ccsniff_route": {"s": s_cc, "events_per_s": n_cc / s_cc, "MBps": nbytes / s_cc / 1e6},
            "python_reader": {"s": s_py, "events_per_s": n_py / s_py, "MBps": nbytes / s_py / 1e6},
            "python_reader_no_redaction": {"s": s_nr, "events_per_s": n_nr / s_nr, "MBps": nbytes / s_nr / 1e6},
            "same_event_count": n_cc == n_py == n_nr,
            "skipped_lines": sum(v for k, v in m.items() if k.startswith("skipped_line:"))}


class _NoRedact:
    counts: dict = {}

    def __call__(self, text):
        return text

    def deep(self, v):
        return v


def transcript_texts() -> list[str]:
    """The free text of every event in the real transcripts (texts, tool outputs, tool inputs as JSON), unredacted."""
    from ingest.normalize import Normalizer
    from ingest.records import discover, read_records
    texts = []
    norm = Normalizer(_NoRedact())
    for rec in read_records(discover(FIXTURE)):
        for ev in norm.feed(rec):
            d = ev.to_dict()
            texts += [v for k, v in d.items() if k in ("text", "output") and v]
            if "input" in d:
                texts.append(json.dumps(d["input"], ensure_ascii=False))
    return texts


def _line(i: int) -> str:
    sid = f"00000000-0000-0000-0000-{i % 10:012d}"
    base = {"uuid": str(uuid.UUID(int=i + 1)), "sessionId": sid, "cwd": "/tmp/bench", "isSidechain": False,
            "timestamp": "2026-11-23T10:00:00.000Z"}
    if i % 2:
        return json.dumps({**base, "type": "assistant", "message": {"id": f"msg_{i}", "role": "assistant", "content": [
            {"type": "text", "text": f"answer {i}: " + "lorem ipsum dolor sit amet " * 4}]}})
    return json.dumps({**base, "type": "user", "message": {"role": "user", "content": f"question {i}\nwith two lines"}})


async def _live(n_events: int, batch: int) -> list[dict]:
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "-bench"
        proj.mkdir()
        f = proj / "live.jsonl"
        f.write_text("")
        got = 0
        async with TraceStream("live", projects=tmp, queue_size=1024) as s:
            await asyncio.wait_for(s.caught_up.wait(), 30)
            t = time.perf_counter()
            with open(f, "a") as fh:
                for start in range(0, n_events, batch):
                    fh.write("".join(_line(i) + "\n" for i in range(start, start + batch)))
                    fh.flush()
                    while got < start + batch:
                        await asyncio.wait_for(s.__anext__(), 30)
                        got += 1
                    if (start + batch) % (n_events // 10) == 0:
                        child = s._proc.pid if s._proc else None
                        samples.append({"events": got, "s": round(time.perf_counter() - t, 1),
                                        "python_rss_MB": _rss_kb() / 1024,
                                        "node_rss_MB": _rss_kb(child) / 1024 if child else None})
    return samples


def bench_false_positives() -> dict:
    """Redactions on text with no secrets: this repo's code, ccsniff's sources, the lock file, the real
    (already scrubbed) transcripts. Every redaction there is a false positive."""
    from ingest.redact import Redactor
    repo = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8") for p in sorted(repo.glob("*/*.py")) + sorted(repo.glob("ingest/bridge/*.mjs"))
             + sorted((repo / "node_modules" / "ccsniff" / "src").glob("*.js")) + [repo / "package-lock.json"]]
    texts += transcript_texts()
    cand = re.compile(r"[A-Za-z0-9+/=_\-]{20,}")
    red = Redactor()
    tokens = sum(len(cand.findall(t)) for t in texts)
    for t in texts:
        red(t)
    flagged = sum(red.counts.values())
    return {"texts": len(texts), "MB": sum(map(len, texts)) / 1e6, "long_tokens": tokens, "redactions": flagged,
            "by_rule": dict(red.counts), "fp_per_long_token": flagged / max(tokens, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--live-events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument("--skip-fp", action="store_true")
    a = ap.parse_args()
    out = {}
    if not a.skip_fp:
        out["false_positives"] = bench_false_positives()
        print(json.dumps(out["false_positives"], indent=1), flush=True)
    if not a.skip_replay:
        out["replay"] = bench_replay(a.mb)
        print(json.dumps(out["replay"], indent=1), flush=True)
    if not a.skip_live:
        out["live"] = asyncio.run(_live(a.live_events, a.batch))
        print(json.dumps(out["live"], indent=1), flush=True)
    out["max_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
