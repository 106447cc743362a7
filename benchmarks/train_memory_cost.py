"""What the session memory costs a training step: the demo configuration (`cli.py train --demo`: the shipped byte
model, ctx 128, 1 live + 3 replayed windows, update gate on) with the memory and with --no-memory, in alternating
runs. Reports per-step medians after the first steps (compilation): the train step itself, the loop's timed part,
the whole iteration from one record to the next, the gate's probe, and the memory's own parts (`memory_s`: the
model's opinion of the live windows, scoring and learning, the undo copy; `canary_mix_s`: the canaries read with a
copy of the memory, inside the probe); and the size of a checkpoint step.

    PYTHONPATH=. .venv/bin/python benchmarks/train_memory_cost.py [--steps 60] [--repeats 2] [--memory-mb 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", type=int, default=5, help="first steps left out (compilation)")
    ap.add_argument("--memory-mb", type=float, default=32.0)
    a = ap.parse_args()
    import chex

    from rwkvjax.train.run import Trainer, demo_setup
    work = Path(tempfile.mkdtemp())
    runs = {"memory": [], "no_memory": []}
    for rep in range(a.repeats):
        for arm in runs:
            ck = work / f"{arm}-{rep}"
            cfg, model = demo_setup(str(ck))
            cfg = dataclasses.replace(cfg, steps=a.steps, save_every=a.steps, memory=arm == "memory",
                                      memory_mb=a.memory_mb)
            chex.clear_trace_counter()
            t0 = time.perf_counter()
            Trainer(cfg, model=model).run(progress=False)
            wall = time.perf_counter() - t0
            recs = [json.loads(x) for x in (ck / "metrics.jsonl").read_text().splitlines()][a.skip:]
            step_dir = ck / str(a.steps)
            runs[arm].append({
                "wall_s": wall, "records": recs,
                "checkpoint_mb": sum(f.stat().st_size for f in step_dir.rglob("*") if f.is_file()) / 2 ** 20})
            print(json.dumps({arm: rep, "wall_s": round(wall, 1)}), flush=True)
    med = lambda arm, key: float(np.median([r[key] for run in runs[arm] for r in run["records"] if key in r]))
    # a whole iteration, from one record to the next: also what happens before the loop's clock starts (the
    # source's next windows, and the memory's forward pass over them, `prepare`)
    iteration = lambda arm: float(np.median(np.concatenate([np.diff([r["time"] for r in run["records"]])
                                                            for run in runs[arm]])))
    out = {"date": time.strftime("%Y-%m-%d"), "steps": a.steps, "repeats": a.repeats, "skipped_steps": a.skip,
           "memory_mb": a.memory_mb, "arms": {}}
    for arm in runs:
        out["arms"][arm] = {k: med(arm, k) for k in ("step_s", "loop_s", "probe_s", "memory_s", "canary_mix_s")
                            if any(k in r for run in runs[arm] for r in run["records"])}
        out["arms"][arm]["iteration_s"] = iteration(arm)
        out["arms"][arm]["checkpoint_step_mb"] = float(np.mean([r["checkpoint_mb"] for r in runs[arm]]))
        out["arms"][arm]["wall_s_mean"] = float(np.mean([r["wall_s"] for r in runs[arm]]))
    m, n = out["arms"]["memory"], out["arms"]["no_memory"]
    out["iteration_s_added"] = m["iteration_s"] - n["iteration_s"]
    out["iteration_s_added_rel"] = m["iteration_s"] / n["iteration_s"] - 1
    out["probe_s_added"] = m["probe_s"] - n["probe_s"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
