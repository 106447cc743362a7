"""Hooks of the training loop: metrics (JSONL, TensorBoard), progress bar, checkpoints, periodic evaluation."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

from rwkvjax.io.checkpoint import SaveFailed
from rwkvjax.train.loop import Hook, StepInfo
from rwkvjax.train.signals import note_saved

log = logging.getLogger(__name__)


class MetricsLog(Hook):
    """One JSON line every `every` steps, and for every step a periodic evaluation scored; appended and flushed
    (`inspect` reads it). A torn last line (the process was killed mid-write) is cut off before appending.

    `logged`: instead of the cadence, which records are written (pretraining writes those its held-out
    evaluation filled); `echo`: also hand each written line to it (pretraining's console lines)."""

    def __init__(self, path: str | Path, every: int = 1, *, logged: Callable[[dict], bool] | None = None,
                 echo: Callable[[str], None] | None = None):
        self.path, self.log_every, self.logged, self.echo = Path(path), every, logged, echo
        repair_torn_tail(self.path)

    def after_step(self, info: StepInfo):
        if self.logged is not None:
            if not self.logged(info.record):
                return
        elif info.step % self.log_every and not any(k.startswith("eval/") for k in info.record) \
                and not any(k in info.record for k in ("lr_backoff", "stall_warning")):
            return  # (a step that backed the learning rate off or warned of a stall is always recorded)
        line = json.dumps(info.record)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as e:  # a full disk: stop with one line rather than train on unlogged
            raise SaveFailed(f"{self.path}: cannot append step {info.step}'s record ({e.strerror or e}); fix the "
                             "cause and run the same command again to resume") from None
        if self.echo is not None:
            self.echo(line)


def repair_torn_tail(path: Path) -> None:
    """Cut an unterminated last line off a JSON-lines file: it is a record whose write was cut short."""
    if not path.is_file() or not path.stat().st_size:
        return
    with open(path, "rb+") as f:
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    log.warning("%s: cut off a torn last line (%d bytes, a record whose write was interrupted)", path,
                len(data) - keep)


class RunStats(Hook):
    """On logged steps, what the dashboard shows beside the step's own figures: the replay buffer's priority
    histogram, the most used merges and the gate's decision counts so far. Register it before `MetricsLog`.

    Cheap: a histogram of at most `replay_capacity` numbers and a sort of the merge slots; a record grows
    by about 0.3 kB (0.9 kB with merges on).
    """

    def __init__(self, every: int, dyntok: Callable[[], object], gate=None, *, bins: int = 16, top: int = 8):
        self.every, self.dyntok, self.gate, self.bins, self.top = every, dyntok, gate, bins, top

    def after_step(self, info: StepInfo):
        rec, replay = info.record, info.learner.replay
        if replay is not None and len(replay):
            rec["replay_hist"] = priority_histogram(replay.priority, self.bins, replay.settings.priority)
        dyntok = self.dyntok()
        if dyntok is not None:
            rec["top_merges"] = [{"text": m.get("text"), "pair": m["pair"], "uses": m["uses"],
                                  "age_base_tokens": m["age_base_tokens"]} for m in dyntok.top_merges(self.top)]
        if self.gate is not None:
            keys = ("accepted", "rolled_back", "quarantined") + \
                (("memory_rolled_back",) if getattr(self.gate, "memory", None) is not None else ())
            rec["gate_counts"] = {k: self.gate.counts.get(k, 0) for k in keys}


def priority_histogram(priority, bins: int, rule: str) -> dict:
    """Counts of replay priorities (mean nats per unit: the window's surprise, or its reducible part) in
    `bins` equal bins between their min and max."""
    counts, edges = np.histogram(np.asarray(priority, np.float64), bins=bins)
    unit = "surprise" if rule == "surprise" else "reducible surprise"
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist(),
            "unit": f"{unit}, mean nats per unit"}


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


def state_tuning_postfix(r: dict) -> dict:
    """The progress bar's figures of a state-tuning step: loss, bits/byte (and the session memory's mixture's),
    speed, merges and replay size."""
    mix = r.get("memory_live_bpb")  # live windows, model + session memory
    return dict(loss=f"{r['loss']:.3f}", bpb=f"{r['bits_per_byte']:.3f}",
                **({} if mix is None else {"mix_bpb": f"{mix:.3f}"}),
                tok_s=f"{r['tokens_per_s']:.0f}", merges=r.get("merges", 0), replay=r.get("replay_size", 0))


class Progress(Hook):
    """The run's progress with an ETA and the figures `postfix` picks from each record (`progress.Reporter`: a
    bar on a terminal, a line every few seconds off one; `enabled` False: nothing, True: a bar anyway); a
    `postfix` returning None leaves the figures as they were (a step whose record has none of them). Before the
    first step it says the step is compiling: that can take minutes, and nothing else is said meanwhile.
    `reporter`: report into this one (a command whose steps are one part of its work), left open at the end."""

    def __init__(self, total: int | None, initial: int, enabled: bool | None = None,
                 postfix: Callable[[dict], dict | None] = state_tuning_postfix, *, what: str = "train",
                 reporter=None):
        from rwkvjax.train.progress import Reporter
        self.postfix, self.own = postfix, reporter is None
        self.reporter = Reporter(what, total, initial, unit="step", enabled=enabled) if reporter is None else reporter

    def at_start(self, step: int) -> None:
        self.reporter.phase(f"compiling step {step + 1}")

    def after_step(self, info: StepInfo):
        self.reporter.update(info.step, self.postfix(info.record))

    def at_end(self, step, reason):
        if self.own:
            self.reporter.close()


class Checkpoint(Hook):
    """Save every `every` steps and once more at the end (whatever ended the loop)."""

    def __init__(self, save: Callable[[int], None], every: int):
        self.save, self.every = save, every

    def at_start(self, step: int) -> None:
        note_saved(step)  # a run that starts after step N resumed it from its checkpoint

    def after_step(self, info: StepInfo):
        self.save(info.step)
        note_saved(info.step)

    def at_end(self, step, reason):
        self.save(step)
        note_saved(step)


class PeriodicEval(Hook):
    """Every `every` steps, bits per byte of fixed texts under the current start state, added to the record.

    Register it before `MetricsLog` so the figures are logged with the step that produced them.
    """

    def __init__(self, score: Callable[[object], dict[str, float]], every: int):
        self.score, self.every = score, every

    def after_step(self, info: StepInfo):
        for name, bpb in self.score(info.learner.trainable).items():
            info.record[f"eval/{name}"] = bpb if math.isfinite(bpb) else None
