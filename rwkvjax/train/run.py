"""A state-tuning run: everything `python cli.py train` builds from a `TrainConfig`, then the loop.

`Trainer(cfg).run()` resumes from the newest checkpoint in `ckpt_dir` when there is one: trainables,
optimizer moments, dynamic tokenizer, replay buffer, pending windows, ingestion cursor, RNG and session
memories all come back, so a resumed run continues exactly where the last committed step left off.

Data flow: `LiveWindows` (ingestion thread -> events -> rendered text -> tokens -> windows) feeds
`train_loop`, which makes one `Learner.update` per step (replay sample -> batch -> jitted step on the
S0/hypernetwork trainables -> AdamW) and runs the hooks (session memory, gate, metrics, progress, periodic
eval, checkpoint). The session memory (`train.session_memory`) reads each step's live windows with the model
of the start state before the update, then learns them in its hook.

State: every part of the run that a checkpoint step holds (its identity and counters, the learner or the
per-project states, the live windows with their cursor and dynamic tokenizer, the gate, the session memories)
saves and restores itself, registered once in `Trainer.state` (`io.checkpoint.RunState`), which the
checkpointer walks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import threading
import time
from pathlib import Path

import jax.numpy as jnp

from ingest.render import RenderOptions
from rwkvjax.errors import DataError, MissingFile
from rwkvjax.io.checkpoint import RunState, SaveFailed, TrainCheckpointer
from rwkvjax.io.lock import LOCK_NAME, RunLock
from rwkvjax.merges.dyntok import expand, for_tokenizer
from rwkvjax.merges.hypernet_io import start_hypernet
from rwkvjax.merges.units import MERGED, PLAIN
from rwkvjax.model.config import Architecture
from rwkvjax.model.value import Model
from rwkvjax.train import hooks
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.data import Window, WindowAssembler, role_bits_per_byte
from rwkvjax.train.ingestion import LiveWindows
from rwkvjax.train.learner import Learner, Update
from rwkvjax.train.loop import train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.projects import ProjectStates, publish_tuned
from rwkvjax.train.remat import resolve_remat
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.run_state import LrBackoff, RunCounters, RunIdentity
from rwkvjax.train.signals import StopSignals
from rwkvjax.train.step import available_device_memory, data_mesh
from rwkvjax.train.trainable import init_trainable

log = logging.getLogger(__name__)



class Trainer:
    """One run on one checkpoint folder, which it holds locked (`io.lock`) until `run` ends or `close`."""

    def __init__(self, cfg: TrainConfig, *, model=None):
        self.cfg = cfg
        self._made_dir = not Path(cfg.ckpt_dir).exists()
        self.lock = RunLock(cfg.ckpt_dir, "train").acquire()
        try:
            self._build(model)
        except BaseException:
            self.close()
            raise

    def _build(self, model) -> None:
        cfg = self.cfg
        if model is None:
            from rwkvjax.io.formats import load
            model = load(cfg.model, dtype=cfg.dtype)
        self.model = model
        self.config: Architecture = model.arch
        params = model.params
        self.tok = model.tokenizer
        self.base_hash = model.hash
        hyper = start_hypernet(self.config, cfg.hypernet, cfg.seed, self.base_hash) if cfg.merges else None
        trainable0 = init_trainable(self.config, train_shift=cfg.train_shift, hyper=hyper)
        tx = state_tuning_optimizer(trainable0, OptimConfig(
            state_lr=cfg.lr, state_lr_final=cfg.lr_final, hyper_lr=cfg.hyper_lr, decay_steps=cfg.decay_steps,
            clip_norm=cfg.clip_norm))
        mesh = data_mesh()
        # the activations of one device's share of the batch must fit that device (the weights are loaded)
        self.remat = resolve_remat(cfg.remat, ctx_len=cfg.ctx_len, config=self.config,
                                   batch=-(-cfg.batch_size // len(mesh.local_devices)),
                                   available_bytes=available_device_memory() if cfg.remat == "auto" else None)
        log.info("remat policy %s%s", self.remat, " (auto)" if cfg.remat == "auto" else "")
        self.learner = Learner(
            self.config, params, trainable0, tx, ctx_len=cfg.ctx_len, live_per_step=cfg.live_per_step,
            replay_per_step=cfg.replay_per_step, replay=self._new_replay(), units=MERGED if cfg.merges else PLAIN,
            n_slots=cfg.merge_slots if cfg.merges else None, mesh=mesh, wkv_impl=cfg.wkv_impl,
            window_text=self._window_text, remat=self.remat)
        self.ckpt = TrainCheckpointer(cfg.ckpt_dir, keep=cfg.keep, async_save=False)
        self.metrics_path = Path(cfg.ckpt_dir) / "metrics.jsonl"
        self.stop = threading.Event()
        dyntok = for_tokenizer(self.tok, window=cfg.merge_window, threshold=cfg.merge_threshold,
                               n_slots=cfg.merge_slots) if cfg.merges else None
        render = RenderOptions(include_thinking=cfg.include_thinking, include_subagents=cfg.include_subagents,
                               max_tool_output=cfg.max_tool_output)
        per_project = cfg.state_scope == "per-project"
        self.memory = self._make_memory(per_project) if cfg.memory else None
        self.gate = self._make_gate(per_project) if cfg.gate else None
        if self.gate is not None:  # the learner projects its updates against the canary gradient the gate keeps
            self.learner.projector = self.gate.projector
        self.projects = ProjectStates(self.learner, self._new_replay, trainable0) if per_project else None
        self.source = LiveWindows(cfg.source, WindowAssembler(self.tok, cfg.ctx_len, render, dyntok),
                                  cfg.live_per_step, self.stop,
                                  divert=self.gate.sources.divert if self.gate else None, by_project=per_project)
        self.counters = RunCounters()
        # everything a checkpoint step holds, each part saving and restoring itself (in this order)
        self.state = RunState()
        self.state.register("run", RunIdentity(cfg, self.config, self.base_hash))
        self.state.register("counters", self.counters)
        if self.projects is None:
            self.state.register("learner", self.learner)
        else:
            self.state.register("projects", self.projects)
        self.state.register("windows", self.source)
        if self.gate is not None:
            self.state.register("gate", self.gate)
            # what the gate's refusals did to the learning rate: run state, so a resumed run keeps its rate
            self.backoff = self.state.register("lr_backoff", LrBackoff(
                self.learner, lr=cfg.lr, after=cfg.lr_backoff_after, floor=cfg.lr_backoff_floor,
                warn_after=cfg.stall_warn_after))
        else:
            self.backoff = None
        if self.memory is not None:  # committed with the step: a resumed run finds the memory of that very step
            self.state.register("memory", self.memory)
        self._save_failed = False
        self.steps_run = self.replay_only_steps = 0  # this command's steps, and those with no new text (the summary)
        self._restore()

    @property
    def step(self) -> int:
        return self.counters.step

    def _make_gate(self, per_project: bool):
        from rwkvjax.train.gate import GateSettings, UpdateGate
        from rwkvjax.train.probe import default_canaries, read_texts
        c = self.cfg
        return UpdateGate(self.config, self.learner.params, self.tok, read_texts(c.canaries or default_canaries()),
                          ctx_len=c.ctx_len, settings=GateSettings(canary_rel=c.gate_canary_rel, z=c.gate_z,
                                                quarantine_bpb=c.gate_quarantine_bpb,
                                                quarantine_grad=c.gate_quarantine_grad,
                                                slice_every=c.gate_slice_every), memory=self.memory,
                          per_project=per_project)

    def _make_memory(self, per_project: bool):
        from rwkvjax.memory.memory import MemorySettings
        from rwkvjax.train.session_memory import FloodScreen, RunMemory
        c = self.cfg
        settings = MemorySettings.for_vocab(self.config.vocab_size, c.memory_mb)
        return RunMemory(settings, config=self.config, params=self.learner.params, ctx_len=c.ctx_len,
                         live_per_step=c.live_per_step, merges=c.merges, per_project=per_project,
                         screen=FloodScreen.for_memory(settings))

    def _new_replay(self) -> ReplayBuffer:
        c = self.cfg
        return ReplayBuffer(ReplaySettings(capacity=c.replay_capacity, admission=c.replay_admission,
                                           priority=c.replay_priority, alpha=c.replay_alpha, beta=c.replay_beta),
                            seed=c.seed)

    def _window_text(self, w: Window) -> str:
        ids = w.units.tolist() if w.slots is None else expand(w.units, w.slots, self.config.vocab_size)
        return self.tok.decode(ids)

    # ----- checkpoint -----
    def _restore(self):
        found = self.ckpt.newest_intact(lambda step: self.ckpt.read_state(step, self.state), set_aside=True)
        if found is None:
            return
        step, (host, arrays) = found
        self.state.restore(host, arrays)
        if self.projects is not None and "projects" in arrays["projects"]:
            self._adopt_consolidated(step)
        log.info("resumed %s at step %d", self.cfg.ckpt_dir, self.step)

    def _adopt_consolidated(self, step: int) -> None:
        """A global state that `cli.py consolidate` promoted from this very checkpoint replaces the saved one."""
        from rwkvjax.io.states import StateStore
        store = StateStore(self.cfg.states)
        name = self.cfg.state_name or Path(self.cfg.ckpt_dir).name
        rec = next((r for r in store.records() if r.name == name), None)
        src = (rec.source or {}) if rec is not None else {}
        if src.get("consolidated") != step or src.get("checkpoint") != str(self.ckpt.directory):
            return
        arr = store.arrays(rec)
        g = self.projects.global_state
        self.projects.global_state = dataclasses.replace(
            g, wkv=jnp.asarray(arr["wkv"]), **{k: jnp.asarray(arr[k]) for k in ("att_shift", "ffn_shift")
                                              if getattr(g, k) is not None and k in arr})
        log.info("adopted the global state consolidated from step %d (%s)", step, rec.id)

    def save(self, step: int | None = None) -> None:
        if self.step == 0 or self._save_failed or self.step in self.ckpt.all_steps():
            return  # nothing learned yet, a failed save already stopped the run, or this step is committed
        try:
            self._save()
        except SaveFailed:
            self._save_failed = True
            raise

    def _save(self) -> None:
        self.ckpt.save_state(self.step, self.state)
        if self.cfg.states:
            self._publish()

    def _publish(self, candidate=None) -> None:
        """The tuned start state(s) into the named-state store (the server picks them up without a restart), each
        with its session memory. Per-project: the global state under the run's name (with the run's memory), each
        project's as `<project>`, its child (with the project's)."""
        from rwkvjax.io.states import StateStore
        from rwkvjax.train.session_memory import GLOBAL
        store, name = StateStore(self.cfg.states), self.cfg.state_name or Path(self.cfg.ckpt_dir).name
        source = {"checkpoint": str(self.ckpt.directory), "step": self.step}
        memories = {} if self.memory is None else self.memory.memories  # each state brings its memory
        publish = functools.partial(publish_tuned, store, name, base_hash=self.base_hash,
                                    tokenizer=self.model.tokenizer_id, source=source,
                                    memory=lambda p: memories.get(GLOBAL if p is None else p))
        if self.projects is None:
            publish(state=self.learner.trainable)
        else:
            publish(state=self.projects.global_state, scope="global", candidate=candidate,
                    projects=self.projects.trees()[0])

    def consolidate_now(self) -> dict:
        """Sleep consolidation of the project states into the global one (`train.consolidate`); the outcome
        is stored: promoted, it is the new global state; rejected, it is kept as `<name>.candidate`."""
        from rwkvjax.train.consolidate import consolidate
        g = self.gate
        start = g.start_canary if g.start_canary is not None else g.canary.canary_and_grad(self.learner.trainable0)[0]
        res = consolidate(self.config, self.learner.params, self.projects.global_state,
                          self.projects.project_windows(), {k: list(v) for k, v in g.sources.slices.items()},
                          g.canary.probe,
                          canary_start=start, ctx_len=self.cfg.ctx_len, wkv_impl=self.cfg.wkv_impl)
        if res.promoted:
            self.projects.global_state = res.trainable
        self._publish(candidate=None if res.promoted else res)
        return res.summary()

    def batches(self):
        """The source's windows; with per-project states, the learner first takes their project's state."""
        for live in self.source:
            if self.projects is not None and live:
                project = live[0].project or "unknown"
                self.projects.switch(project)
                if self.gate is not None:
                    self.gate.switch(project, self.learner.trainable)
                if self.memory is not None:
                    self.memory.switch(project)
            if self.memory is not None:  # the model's opinion from the start state before this step's update
                self.memory.prepare(live, self.learner.trainable)
            yield live

    # ----- one step's record -----
    def describe(self, step: int, upd: Update) -> dict:
        m, live = upd.metrics, upd.live
        live_base, live_bytes = self.counters.count(step, live)
        self.steps_run += 1
        self.replay_only_steps += int(not live)
        rec = {"step": step, "time": time.time(), "loss": m["loss"],
               "bits_per_byte": m["bits"] / max(m["bytes"], 1.0),
               "live_bits_per_byte": upd.live_bits / live_bytes if live_bytes else None,
               "live_windows": len(live), "replay_windows": len(upd.replayed),
               "live_sessions": sorted({w.session for w in live}),
               "project": None if self.projects is None else self.projects.current,
               "units": sum(len(w.units) for w in live), "base_tokens": live_base,
               "tokens_per_s": m["tokens"] / upd.seconds, "step_s": upd.seconds, "grad_norm": m["grad_norm"],
               "nonfinite_total": int(m["nonfinite_total"]), "replay_size": len(self.learner.replay),
               "tokens_seen": self.counters.tokens_seen, "bytes_seen": self.counters.bytes_seen}
        rec.update({f"role_bpb/{r}": v for r, v in role_bits_per_byte(live, upd.unit_nll).items()})
        dyntok = self.source.asm.dyntok
        if dyntok is not None:
            st = dyntok.stats(top=0)
            rec.update(merges=st["merges"], promotions=st["promotions"], evictions=st["evictions"],
                       active_slots=st["active_slots"], steps_per_base_token=st["steps_per_base_token"])
        return rec

    # ----- the run -----
    def hooks(self, progress: bool | None) -> list[hooks.Hook]:
        cfg = self.cfg
        out: list[hooks.Hook] = []
        if self.memory is not None:  # first: the gate's canary probe reads the memory that learned the step
            from rwkvjax.train.session_memory import MemoryHook
            out.append(MemoryHook(self.memory, transactional=self.gate is not None))
        if self.gate is not None:
            out.append(self.gate)
        if cfg.consolidate_every:
            from rwkvjax.train.consolidate import Consolidate
            out.append(Consolidate(cfg.consolidate_every, self.consolidate_now))
        if cfg.eval_every:
            from rwkvjax.train.probe import TextProbe, default_canaries, read_texts
            texts = read_texts(cfg.eval_texts or default_canaries())
            probe = TextProbe(self.config, self.learner.params, self.tok, texts, ctx_len=cfg.ctx_len,
                              wkv_impl=cfg.wkv_impl)
            out.append(hooks.PeriodicEval(probe, cfg.eval_every))
        if self.backoff is not None:  # before the records are written: it adds its fields to every step's
            out.append(self.backoff)
        out.append(hooks.RunStats(cfg.log_every, lambda: self.source.asm.dyntok, self.gate))
        out.append(hooks.MetricsLog(self.metrics_path, cfg.log_every))
        if cfg.tensorboard:
            out.append(hooks.TensorBoardLog(Path(cfg.ckpt_dir) / "tensorboard", cfg.log_every))
        out.append(hooks.Progress(cfg.steps, self.step, progress))
        out.append(hooks.Checkpoint(self.save, cfg.save_every))
        return out

    def run(self, *, progress: bool | None = None) -> dict:
        cfg = self.cfg
        if cfg.steps is not None and self.step >= cfg.steps:
            self.close()
            return {"step": self.step, "stopped": "done", "already_finished": True,
                    "ckpt_dir": str(self.ckpt.directory)}
        try:
            with StopSignals(self.stop) as signals, self.source:  # Ctrl-C/SIGTERM: the step in flight finishes
                _, stopped = train_loop(self.learner, self.batches(), self.hooks(progress), step=self.step,
                                        steps=cfg.steps, stop=self.stop, describe=self.describe)
        finally:
            self.close()
        if stopped == "source exhausted" and self.step == 0:
            self._nothing_to_learn()
        out = {"step": self.step, "stopped": stopped, "tokens_seen": self.counters.tokens_seen,
               "ckpt_dir": str(self.ckpt.directory)}
        if signals.name:
            out["signal"] = signals.name
        out.update(steps_run=self.steps_run, replay_only_steps=self.replay_only_steps, metrics=str(self.metrics_path),
                   heldout=self.heldout_figures(), gate=None if self.gate is None else dict(self.gate.counts))
        if cfg.states:
            out.update(states=cfg.states, state_name=cfg.state_name or Path(cfg.ckpt_dir).name)
        return out

    def heldout_figures(self) -> dict | None:
        """Bits per byte of the update gate's held-out slice (windows never trained on, at most its
        `slice_windows`) read from the run's start state and from the tuned one the learner holds: what the tuning
        is worth on new text, unlike the trained windows' falling figure. None without the gate or a held-out
        window yet. With per-project states, the slice of the project the learner holds."""
        from rwkvjax.train.gate import base_window
        if self.gate is None:
            return None
        windows = self.gate.sources.slice(self.gate.key)
        if not windows:
            return None
        # the frozen model reads base tokens: merged windows are expanded (twice the units at most)
        merged = any(w.slots is not None for w in windows)
        plain = [w if w.slots is None else base_window(w, self.config.vocab_size) for w in windows]
        read = functools.partial(self.gate.canary.bpb, windows=plain, batch_size=self.gate.s.slice_windows,
                                 ctx_len=self.cfg.ctx_len * (2 if merged else 1))
        return {"windows": len(plain), "frozen_bpb": read(self.learner.trainable0),
                "tuned_bpb": read(self.learner.trainable)}


    def _nothing_to_learn(self):
        """The source ended before a single window: say so, and leave no trace of this run behind."""
        if self._made_dir and not any(p.name != LOCK_NAME for p in self.ckpt.directory.iterdir()):
            shutil.rmtree(self.ckpt.directory)
        raise DataError(f"no sessions found in {', '.join(self.cfg.source)}: no file there holds a Claude Code "
                        "transcript with text to train on (see the warnings above); nothing was written")

    def close(self) -> None:
        """Wait for pending saves and release the folder."""
        if getattr(self, "ckpt", None) is not None:
            self.ckpt.close()
        self.lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run(cfg: TrainConfig, **kw) -> dict:
    return Trainer(cfg, **kw).run()


DATA = Path(__file__).resolve().parents[1] / "data"
DEMO_MODEL = DATA / "demo_model.safetensors"
DEMO_TRACES = DATA / "demo_projects"


def demo_setup(ckpt_dir: str) -> tuple[TrainConfig, Model]:
    """The offline demo: the project's shipped byte-level model on the shipped sample sessions."""
    from rwkvjax.io.formats import load
    if not DEMO_MODEL.is_file():
        raise MissingFile(f"{DEMO_MODEL} is missing; rebuild it with the recipe in {DATA / 'README.md'}")
    cfg = TrainConfig(ckpt_dir=ckpt_dir, source=(str(DEMO_TRACES),), model=str(DEMO_MODEL), steps=60,
                      ctx_len=128, replay_per_step=3, save_every=20, lr=0.1, lr_final=0.01, decay_steps=60)
    return cfg, load(DEMO_MODEL)
