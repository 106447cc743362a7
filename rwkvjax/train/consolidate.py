"""Sleep consolidation: fold the project states into the global one.

The global start state is trained (AdamW, from where it is) on the replay windows of every project, each
project weighted equally whatever its size. The candidate is promoted only when it does not make any
project's held-out slice worse than the current global state does, and the canaries stay within their bound;
otherwise it is kept as a candidate with the reason. Project states themselves are not touched.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading

from rwkvjax.merges.units import PLAIN
from rwkvjax.train.data import Window, make_batch
from rwkvjax.train.hooks import Progress
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import Hook, StepInfo, train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.probe import TextProbe
from rwkvjax.train.step import make_eval_fn, to_host
from rwkvjax.train.trainable import Trainable


@dataclasses.dataclass(frozen=True)
class ConsolidationSettings:
    steps: int = 32
    batch: int = 4
    lr: float = 0.1
    canary_rel: float = 0.01   # the canaries may rise at most this much over `canary_start`
    tolerance: float = 0.0     # bits/byte a project's held-out slice may rise (0: must not get worse)
    seed: int = 0


@dataclasses.dataclass
class Consolidation:
    promoted: bool
    reason: str
    trainable: Trainable                 # the candidate
    heldout_before: dict[str, float]     # bits/byte of each project's held-out slice, current global state
    heldout_after: dict[str, float]      # ... under the candidate
    canary_before: float
    canary_after: float
    windows: dict[str, int]              # replay windows of each project it trained on
    no_heldout: list[str]                # projects without a held-out slice (not checked; said so)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("trainable")
        return d


def _bpb(eval_fn, trainable, params, windows: list[Window], ctx_len: int) -> float:
    bits = nbytes = 0.0
    for i in range(0, len(windows), 8):
        chunk = windows[i:i + 8]
        _, m = eval_fn(trainable, params, make_batch(chunk, [1.0] * len(chunk), batch_size=8, ctx_len=ctx_len))
        m = to_host(m)
        bits, nbytes = bits + float(m["bits"]), nbytes + float(m["bytes"])
    return bits / max(nbytes, 1.0)


def consolidate(config, params, global_state: Trainable, project_windows: dict[str, list[Window]],
                heldout: dict[str, list[Window]], probe: TextProbe, *, canary_start: float, ctx_len: int,
                settings: ConsolidationSettings = ConsolidationSettings(), wkv_impl="auto",
                reporter=None) -> Consolidation:
    """`reporter` (`progress.Reporter`): where its steps and checks are reported (None: nowhere)."""
    s = settings
    say = (lambda text: None) if reporter is None else reporter.phase
    pools = {p: ws for p, ws in project_windows.items() if ws}
    if not pools:
        raise ValueError("consolidation: no project has replay windows to train on")
    tx = state_tuning_optimizer(global_state, OptimConfig(state_lr=s.lr, state_lr_final=s.lr / 10,
                                                          decay_steps=s.steps))
    learner = Learner(config, params, global_state, tx, ctx_len=ctx_len, live_per_step=s.batch, wkv_impl=wkv_impl,
                      max_traces=None)
    rng = random.Random(s.seed)
    names = sorted(pools)

    def batches():
        for step in range(s.steps):
            # projects in turn, a random window of each: every project weighs the same
            yield [rng.choice(pools[names[(step * s.batch + j) % len(names)]]) for j in range(s.batch)]

    hooks = [] if reporter is None else [Progress(s.steps, 0, postfix=lambda r: None, reporter=reporter)]
    train_loop(learner, batches(), hooks, step=0, steps=s.steps, stop=threading.Event(),
               describe=lambda step, _: {"step": step})
    cand = learner.trainable
    eval_fn = make_eval_fn(config, units=PLAIN, wkv_impl=wkv_impl)
    checked = {p: ws for p, ws in heldout.items() if ws}
    say(f"scoring the held-out slices of {len(checked)} project(s), before and after")
    before = {p: _bpb(eval_fn, global_state, params, ws, ctx_len) for p, ws in checked.items()}
    after = {p: _bpb(eval_fn, cand, params, ws, ctx_len) for p, ws in checked.items()}
    say("scoring the canaries, before and after")
    c_before = float(sum(probe(global_state).values()) / len(probe.names))
    c_after = float(sum(probe(cand).values()) / len(probe.names))
    worse = [f"{p} {before[p]:.4f} -> {after[p]:.4f} bpb" for p in sorted(checked)
             if not after[p] <= before[p] + s.tolerance]
    reasons = []
    if worse:
        reasons.append("held-out slice worse for " + "; ".join(worse))
    if not math.isfinite(c_after) or c_after > canary_start * (1 + s.canary_rel):
        reasons.append(f"canary {c_after:.4f} bpb is over {100 * s.canary_rel:.1f}% above its start "
                       f"{canary_start:.4f}")
    if not checked:
        reasons.append("no project has a held-out slice to check it on")
    promoted = not reasons
    reason = ("held-out bpb no worse on " + f"{len(checked)} project(s), canaries within bound") if promoted \
        else "; ".join(reasons)
    return Consolidation(promoted, reason, cand, before, after, c_before, c_after,
                         {p: len(ws) for p, ws in pools.items()}, sorted(set(project_windows) - set(checked)))


class Consolidate(Hook):
    """Every `every` steps of a per-project run: consolidate, and on promotion replace the global state.
    Register it before `MetricsLog`: the outcome goes into that step's record."""

    def __init__(self, every: int, run_once):
        self.every, self.run_once = every, run_once

    def after_step(self, info: StepInfo):
        info.record["consolidation"] = self.run_once()


def consolidate_checkpoint(cfg, *, progress: bool | None = None) -> dict:
    """`cli.py consolidate`: consolidate the newest checkpoint of a per-project run (read only) and write the
    outcome into its named-state store. A run resumed from that checkpoint adopts a promoted global state.
    `progress`: as `progress.Reporter`'s `enabled` (None: a bar on a terminal, lines off one)."""
    from rwkvjax.train.progress import Reporter
    reporter = Reporter("consolidate", cfg.steps, enabled=progress)
    try:
        reporter.phase("reading the checkpoint and loading the model")
        return _consolidate_checkpoint(cfg, reporter)
    finally:
        reporter.close()


def _consolidate_checkpoint(cfg, reporter) -> dict:
    from pathlib import Path

    from rwkvjax.errors import CheckpointMismatch, ConfigError
    from rwkvjax.io.checkpoint import TrainCheckpointer
    from rwkvjax.io.formats import load
    from rwkvjax.io.states import StateStore
    from rwkvjax.train.probe import default_canaries, read_texts
    from rwkvjax.train.projects import publish_tuned
    from rwkvjax.train.replay import ReplayBuffer
    from rwkvjax.train.trainable import init_trainable

    ck = TrainCheckpointer(cfg.ckpt_dir, read_only=True)
    try:
        step, host = ck._newest(ck._host)
        tc = host["train_config"]
        if tc.get("state_scope") != "per-project" or not host.get("projects"):
            raise ConfigError(f"{cfg.ckpt_dir}: not a `train --state-scope per-project` run (nothing to consolidate)")
        states = cfg.states or tc.get("states")
        if not states:
            raise ConfigError(f"{cfg.ckpt_dir}: the run has no --states folder; pass --states DIR")
        model = load(host["base_model"], dtype=tc.get("dtype", "fp32"))
        config, params = model.arch, model.params
        if model.hash != host["base_hash"]:
            raise CheckpointMismatch(f"{cfg.ckpt_dir}: the model at {host['base_model']} is not the one this run "
                                     f"was trained on (hash {host['base_hash']})")
        tok = model.tokenizer
        tr0 = init_trainable(config, train_shift=tc["train_shift"])
        names = list(host["projects"]["replay"])
        trees = ck.restore_extra(step, {"trainable": tr0, "projects": {p: tr0 for p in names}})
        # the run's memory goes with the global state it writes (a state written without it would lose it)
        from rwkvjax.train.session_memory import GLOBAL, restore_memories
        memory = restore_memories(ck, step, host).get(GLOBAL)
    finally:
        ck.close()
    windows = {p: list(ReplayBuffer.from_dict(host["projects"]["replay"][p]).windows) for p in names}
    gate = host.get("gate") or {}
    heldout = {k: [Window.from_dict(w) for w in v] for k, v in gate.get("slices", {}).items()}
    probe = TextProbe(config, params, tok, read_texts(tc.get("canaries") or default_canaries()), ctx_len=512,
                      max_windows=1)
    start = gate.get("start_canary")
    if start is None:
        start = float(sum(probe(tr0).values()) / len(probe.names))
    res = consolidate(config, params, trees["trainable"], windows, heldout, probe, canary_start=start,
                      ctx_len=tc["ctx_len"], settings=ConsolidationSettings(
                          steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, canary_rel=cfg.canary_rel,
                          tolerance=cfg.tolerance, seed=cfg.seed), reporter=reporter)
    reporter.phase("writing the outcome into the named-state store")
    name = tc.get("state_name") or Path(cfg.ckpt_dir).name
    source = {"checkpoint": str(Path(cfg.ckpt_dir).absolute()), "step": step, "consolidated": step,
              "reason": res.reason}
    written = publish_tuned(StateStore(states), name, base_hash=host["base_hash"], tokenizer=model.tokenizer_id,
                            source=source, memory=lambda project: memory,
                            **(dict(state=res.trainable, scope="global") if res.promoted else dict(candidate=res)))
    rec = written[name if res.promoted else f"{name}.candidate"]
    return {**res.summary(), "state": rec.name, "state_id": rec.id, "checkpoint_step": step}
