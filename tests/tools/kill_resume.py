"""Run a command that checkpoints into a folder, SIGKILL it at random moments once a checkpoint exists, then
let it finish: what the crash-resume tests of `train` share."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path


def run_killed(argv: list[str], ckpt: Path, env: dict, *, kills: int = 2, timeout: float = 900) -> int:
    """Start `argv` `kills` times, each killed at a random moment (0-3 s) after the first step folder appears in
    `ckpt` (or left alone if it ends first), then once more to the end, which must succeed; returns how many
    kills landed."""
    rng = random.Random()
    landed = 0
    for _ in range(kills):
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while time.time() < deadline and p.poll() is None and not any(Path(ckpt).glob("[0-9]*")):
            time.sleep(0.2)  # polling for the readiness signal: the first committed step
        time.sleep(rng.uniform(0.0, 3.0))  # the kill lands at a random moment, not a wait for readiness
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            landed += 1
        p.communicate(timeout=60)
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return landed
