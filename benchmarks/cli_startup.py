"""Wall time of `python cli.py -h` and `python cli.py COMMAND -h`, against the interpreter's own start.

    PYTHONPATH=. .venv/bin/python benchmarks/cli_startup.py [--rounds 15]

Rounds are interleaved (anchor, then each command), medians reported; one JSON line per case on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rwkvjax.cli import COMMANDS  # noqa: E402


def _wall(argv) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    cases = {"python -c pass (anchor)": [sys.executable, "-c", "pass"], "cli.py -h": [sys.executable, "cli.py", "-h"]}
    cases.update({f"cli.py {c} -h": [sys.executable, "cli.py", c, "-h"] for c in COMMANDS})
    times = {k: [] for k in cases}
    for _ in range(a.rounds):
        for k, argv in cases.items():
            times[k].append(_wall(argv))
    anchor = statistics.median(times["python -c pass (anchor)"])
    for k, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({"case": k, "median_s": round(med, 4), "max_s": round(max(ts), 4),
                          "over_anchor_s": round(med - anchor, 4), "rounds": a.rounds}))


if __name__ == "__main__":
    main()
