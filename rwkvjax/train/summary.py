"""The human lines that end a `train` command (on stderr; its JSON line stays on stdout for scripts).

A run used to end with a JSON line only, so a demo whose bits/byte kept falling on replayed windows looked like
it was still learning (issue 25). The summary says what the tuned state is worth on windows it never trained on
(the update gate's held-out slice, frozen start state against tuned), how many updates the gate kept, where the
outputs are, and what to run next. A re-run of a run already at its `--steps` says so in one line instead.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from rwkvjax.train.config import TrainConfig

CLI = "python cli.py"


def _q(path) -> str:
    return shlex.quote(str(path))


def train_argv(cfg: TrainConfig, **changes) -> str:
    """The `train` command line that resumes the run `cfg` describes, with `changes` (the demo's own settings
    spelled out: `--demo` itself fixes its --steps)."""
    cfg = dataclasses.replace(cfg, demo=False, **changes)
    words = [CLI, "train"]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + f.name.replace("_", "-"))
        elif isinstance(v, tuple):
            words += [flag, *map(_q, v)]
        else:
            words += [flag, _q(v)]
    return " ".join(words)


def finished_line(out: dict, cfg: TrainConfig, *, demo: bool) -> str:
    """One line for a run that was already at its `--steps` and trained nothing: how to extend or restart it."""
    ckpt, step = out.get("ckpt_dir") or cfg.ckpt_dir, out["step"]
    return (f"train: {'the demo' if demo else 'this run'} in {ckpt} is already finished (step {step} of --steps "
            f"{cfg.steps}); nothing to do. Extend it: {train_argv(cfg, steps=2 * max(step, 1))} ; restart it: "
            f"another --ckpt-dir, or remove {ckpt}. See it: {CLI} inspect --checkpoint {_q(ckpt)}")


def _bpb(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def format_summary(out: dict, cfg: TrainConfig) -> str:
    """The summary of a run `Trainer.run` just ended (`out` is its result, `cfg` its settings), a few lines."""
    ckpt, model = out.get("ckpt_dir") or cfg.ckpt_dir, cfg.model
    why = out.get("stopped", "done") + (f", {out['signal']}" if out.get("signal") else "")
    lines = [f"train: stopped ({why}) at step {out.get('step', 0)}; this command made {out.get('steps_run', 0)} "
             f"steps, {out.get('replay_only_steps', 0)} of them on replayed windows only (no new text)"]
    held = out.get("heldout")
    if held:
        gain = None if held["frozen_bpb"] is None or held["tuned_bpb"] is None else \
            held["frozen_bpb"] - held["tuned_bpb"]
        n = held["windows"]
        lines.append(f"  held-out slice ({n} window{'s' * (n != 1)} never trained on): frozen "
                     f"{_bpb(held['frozen_bpb'])} bits/byte, tuned {_bpb(held['tuned_bpb'])}"
                     + ("" if gain is None else f" ({gain:+.4f} bits/byte gained)"))
    elif out.get("gate") is None:
        lines.append("  held-out slice: none (--no-gate holds no windows out); bits/byte on trained windows is "
                     "not evidence of learning")
    else:
        lines.append("  held-out slice: no window held out yet (every --gate-slice-every-th new window is)")
    gate = out.get("gate")
    if gate is not None:
        lines.append(f"  updates: {gate.get('accepted', 0)} accepted, {gate.get('rolled_back', 0)} rolled back, "
                     f"{gate.get('quarantined', 0)} quarantined or screened out (whole run)")
    lines.append(f"  checkpoint: {ckpt}   metrics: {out.get('metrics', str(Path(ckpt) / 'metrics.jsonl'))}")
    states, name = out.get("states"), out.get("state_name")
    if states:
        lines.append(f"  published state: {name} in {states}")
    lines.append(f"  next: {CLI} inspect --checkpoint {_q(ckpt)}")
    lines.append(f"        {CLI} dashboard --ckpt-dir {_q(ckpt)}")
    if states:
        lines.append(f"        {CLI} serve --model {_q(model)} --states {_q(states)}   (requests name model={name})")
    else:
        lines.append(f"        {CLI} generate --model {_q(model)} --checkpoint {_q(ckpt)} --prompt 'def '   "
                     f"(to `serve` it, train with --states DIR)")
    return "\n".join(lines)
