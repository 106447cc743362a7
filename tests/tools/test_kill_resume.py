"""`run_killed` kills at the steps a run announces, so its kills land however fast the run is.

The child here is a stand-in trainer that is quick once its first checkpoint exists (well under a second to the
end): the old helper, which slept a random 0-3 s after the first checkpoint, missed such a run most of the time
(`kills=0` in the issue); killing at an announced step cannot come after the end."""

from __future__ import annotations

import json
import os
import sys

from tests.tools.kill_resume import run_killed

STEPS = 14

# Resumes from its newest step folder, logs each step to metrics.jsonl (as `train` does), saves every 2 steps.
# The pause per step is the child's own pace (the time the parent has to react after an announcement), not a
# wait of the test's.
_CHILD = r"""
import json, os, sys, time
ckpt, steps = sys.argv[1], int(sys.argv[2])
os.makedirs(ckpt, exist_ok=True)
saved = [int(n) for n in os.listdir(ckpt) if n.isdigit()]
start = max(saved, default=0)
with open(os.path.join(ckpt, "starts"), "a") as f:
    f.write(f"{start}\n")
for step in range(start + 1, steps + 1):
    time.sleep(0.12)
    with open(os.path.join(ckpt, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step}) + "\n")
    if step % 2 == 0:
        os.makedirs(os.path.join(ckpt, str(step)))
"""


def test_each_kill_lands_at_its_announced_step_and_the_run_then_finishes(tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = [sys.executable, "-c", _CHILD, str(ckpt), str(STEPS)]
    assert run_killed(argv, ckpt, dict(os.environ), at_steps=(3, 6), timeout=120) == 2
    starts = [int(s) for s in (ckpt / "starts").read_text().split()]
    # two killed starts and the last one, each resuming from the newest step its predecessor saved
    assert len(starts) == 3 and starts[0] == 0 and 0 < starts[1] < starts[2] < STEPS, starts
    steps = [json.loads(line)["step"] for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert steps[:3] == [1, 2, 3] and steps[-1] == STEPS and set(steps) == set(range(1, STEPS + 1))
