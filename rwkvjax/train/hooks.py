"""Hooks of the training loop: metrics (JSONL, TensorBoard), progress bar, checkpoints, periodic evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from rwkvjax.train.loop import Hook, StepInfo


class MetricsLog(Hook):
    """One JSON line every `every` steps, and for every step a periodic evaluation scored; appended and flushed
    (`inspect` reads it)."""

    def __init__(self, path: str | Path, every: int = 1):
        self.path, self.log_every = Path(path), every

    def after_step(self, info: StepInfo):
        if info.step % self.log_every and not any(k.startswith("eval/") for k in info.record):
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(info.record) + "\n")


class TensorBoardLog(Hook):
    """Every numeric field of the record as a TensorBoard scalar (needs the `tensorboard` extra)."""

    def __init__(self, logdir: str | Path, every: int = 1):
        from tensorboardX import SummaryWriter
        self.writer, self.every = SummaryWriter(str(logdir)), every

    def after_step(self, info: StepInfo):
        for k, v in info.record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time"):
                self.writer.add_scalar(k, v, info.step)

    def at_end(self, step, reason):
        self.writer.close()


class Progress(Hook):
    """A tqdm bar with loss, bits/byte and speed (off without a terminal unless forced)."""

    def __init__(self, total: int | None, initial: int, enabled: bool | None = None):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, disable=None if enabled is None else not enabled,
                        dynamic_ncols=True, unit="step")

    def after_step(self, info: StepInfo):
        r = info.record
        self.bar.update(info.step - self.bar.n)
        self.bar.set_postfix(loss=f"{r['loss']:.3f}", bpb=f"{r['bits_per_byte']:.3f}",
                             tok_s=f"{r['tokens_per_s']:.0f}", merges=r.get("merges", 0),
                             replay=r.get("replay_size", 0), refresh=False)

    def at_end(self, step, reason):
        self.bar.close()


class Checkpoint(Hook):
    """Save every `every` steps and once more at the end (whatever ended the loop)."""

    def __init__(self, save: Callable[[int], None], every: int):
        self.save, self.every = save, every

    def after_step(self, info: StepInfo):
        self.save(info.step)

    def at_end(self, step, reason):
        self.save(step)


class PeriodicEval(Hook):
    """Every `every` steps, bits per byte of fixed texts under the current start state, added to the record.

    Register it before `MetricsLog` so the figures are logged with the step that produced them.
    """

    def __init__(self, score: Callable[[object], dict[str, float]], every: int):
        self.score, self.every = score, every

    def after_step(self, info: StepInfo):
        for name, bpb in self.score(info.learner.trainable).items():
            info.record[f"eval/{name}"] = bpb if math.isfinite(bpb) else None
