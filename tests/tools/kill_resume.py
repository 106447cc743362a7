"""Run a command that checkpoints into a folder, SIGKILL it at steps it announces, then let it finish: what the
crash-resume tests of `train` share.

The kill is tied to the child's own progress (the step records it appends to `<ckpt>/metrics.jsonl`), never to a
delay: a delay assumes a speed, and on a fast or idle machine the run could end before a timed kill (no kill lands),
on a busy one the kill could land before any step. A step announced with steps still to run is a point the kill
always reaches while the run is going."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

POLL_S = 0.01  # how often the metrics log is read while waiting for the announced step


def _newest_logged_step(ckpt: Path) -> int:
    """The highest step recorded in `ckpt/metrics.jsonl` so far (0 when none); a line still being written is
    skipped (it is read again at the next poll)."""
    path = Path(ckpt) / "metrics.jsonl"
    if not path.is_file():
        return 0
    newest = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            newest = max(newest, row["step"])
    return newest


def run_killed(argv: list[str], ckpt: Path, env: dict, *, at_steps: tuple[int, ...] = (3, 6),
               timeout: float = 900) -> int:
    """Start `argv` once per entry of `at_steps` (increasing, each below the run's last step), SIGKILL it as soon
    as its metrics log records that step, then start it once more to the end, which must succeed. Returns how
    many kills landed on a running process (each one does unless the run ended early, e.g. with an error).

    Killing right after an odd step lands between two saves (`--save-every 2`: the resumed run repeats it);
    after an even step, while that step's checkpoint may still be being written."""
    assert list(at_steps) == sorted(set(at_steps)), at_steps  # each kill's step is past the previous run's log
    landed = 0
    for step in at_steps:
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        # polling for the readiness signal (the announced step) with a deadline: no speed is assumed
        while p.poll() is None and _newest_logged_step(ckpt) < step:
            if time.monotonic() > deadline:
                p.kill()
                p.communicate(timeout=60)
                raise AssertionError(f"{argv[:3]}: step {step} not logged within {timeout:.0f} s")
            time.sleep(POLL_S)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        assert p.returncode in (0, -signal.SIGKILL), err[-3000:]
        landed += p.returncode == -signal.SIGKILL  # by its exit status: the signal found it still running
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return landed
