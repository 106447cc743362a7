"""The state-tuning loop: ingestion in the background, tokens and merges on the host, steps on device.

`run(TrainConfig)` resumes from the newest checkpoint in `ckpt_dir` when there is one: trainables,
optimizer moments, dynamic tokenizer, replay buffer, pending tokens, ingestion cursor and RNG all
come back, so a resumed run continues exactly where the last committed step left off.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ingest.cursor import Cursor
from ingest.dyntok import DynamicTokenizer, DynTokSettings, digit_protected, expand
from ingest.render import RenderOptions
from ingest.replay import ReplayBuffer, ReplaySettings
from rwkvjax.batching import MERGED, make_batch
from rwkvjax.checkpoint import CheckpointMismatch, TrainCheckpointer, params_hash
from rwkvjax.config import Config
from rwkvjax.hypernet_io import start_hypernet
from rwkvjax.objective import PLAIN
from rwkvjax.optim import OptimConfig, make_optimizer
from rwkvjax.run_config import TrainConfig
from rwkvjax.tokenizer import for_vocab
from rwkvjax.train_step import data_mesh, make_eval_fn, make_train_step, replicate, shard_batch
from rwkvjax.trainable import init_trainable
from rwkvjax.windows import Window, WindowAssembler

log = logging.getLogger(__name__)


class _Ingestion(threading.Thread):
    """Runs the async trace stream in its own thread; events reach the trainer through a bounded queue."""

    _END = object()

    def __init__(self, cfg: TrainConfig, cursor: Cursor, maxsize: int = 4096):
        super().__init__(daemon=True, name="ingestion")
        self.cfg, self.cursor = cfg, cursor
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.metrics: dict = {}
        self._stop = threading.Event()
        self._loop = None

    def run(self):
        import asyncio
        from ingest.stream import TraceStream
        src = self.cfg.source
        mode = src[0] if src[0] in ("live", "replay") else "replay"
        paths = None if src[0] in ("live", "replay") else list(src)

        async def main():
            async with TraceStream(mode, paths=paths, cursor=self.cursor) as stream:
                async for ev in stream:
                    while not self._stop.is_set():
                        try:
                            self.q.put(ev, timeout=0.2)
                            break
                        except queue.Full:
                            await asyncio.sleep(0)
                    self.metrics = dict(stream.metrics)
                    if self._stop.is_set():
                        return
                self.metrics = dict(stream.metrics)

        try:
            asyncio.run(main())
            self.q.put(self._END)
        except BaseException as e:  # forwarded to the training thread, which reports it
            self.q.put(e)

    def stop(self):
        self._stop.set()


class Trainer:
    def __init__(self, cfg: TrainConfig, *, model=None):
        self.cfg = cfg
        dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[cfg.dtype]
        if model is None:
            from rwkvjax.loaders import load
            model = load(cfg.model, dtype=dtype)
        self.config: Config
        self.config, params = model
        self.tok = for_vocab(self.config.vocab_size)
        self.base_hash = params_hash(params)
        self.mesh = data_mesh()
        n_dev = self.mesh.devices.size
        self.batch_size = math.ceil(cfg.batch_size / n_dev) * n_dev
        self.params = replicate(params, self.mesh)
        V = self.config.vocab_size
        self.units = MERGED if cfg.merges else PLAIN
        hyper = start_hypernet(self.config, cfg.hypernet, cfg.seed, self.base_hash) if cfg.merges else None
        self.trainable0 = init_trainable(self.config, train_shift=cfg.train_shift, hyper=hyper)
        self.tx = make_optimizer(self.trainable0, OptimConfig(
            state_lr=cfg.lr, state_lr_final=cfg.lr_final, hyper_lr=cfg.hyper_lr, decay_steps=cfg.decay_steps,
            clip_norm=cfg.clip_norm))
        self.step_fn = make_train_step(self.config, self.tx, units=self.units, wkv_impl=cfg.wkv_impl)
        self.eval_fn = make_eval_fn(self.config, units=self.units, wkv_impl=cfg.wkv_impl)
        self.ckpt = TrainCheckpointer(cfg.ckpt_dir, keep=cfg.keep)
        self.metrics_path = Path(cfg.ckpt_dir) / "metrics.jsonl"
        self._tb = None
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(cfg.ckpt_dir) / "tensorboard"))
        self.dyn_settings = DynTokSettings(
            v_base=V, window=cfg.merge_window, threshold=cfg.merge_threshold, n_slots=cfg.merge_slots,
            protected=digit_protected(self.tok.decode_bytes, V)) if cfg.merges else None
        self._restore_or_init()

    # ----- state -----
    def _restore_or_init(self):
        cfg = self.cfg
        step = self.ckpt.latest_step()
        dyntok = DynamicTokenizer(self.dyn_settings, self.tok.decode_bytes) if cfg.merges else None
        render = RenderOptions(include_thinking=cfg.include_thinking, include_subagents=cfg.include_subagents,
                               max_tool_output=cfg.max_tool_output)
        self.asm = WindowAssembler(self.tok, cfg.ctx_len, render, dyntok)
        self.replay = ReplayBuffer(ReplaySettings(
            capacity=cfg.replay_capacity, admission=cfg.replay_admission, priority=cfg.replay_priority,
            alpha=cfg.replay_alpha, beta=cfg.replay_beta), seed=cfg.seed)
        self.replay_windows: list[dict] = []   # parallel to the buffer's slots: window + frozen NLL
        self.ready: list[Window] = []           # windows cut but not trained yet
        self.cursor = Cursor()
        self.step, self.tokens_seen, self.bytes_seen = 0, 0, 0
        # copies: the step donates its inputs, and trainable0 must survive (reducible-surprise baseline)
        self.trainable = jax.tree.map(jnp.copy, self.trainable0)
        self.opt_state = self.tx.init(self.trainable)
        if step is None:
            self._place()
            return
        host = self.ckpt.restore_host(step)
        if host["base_hash"] != self.base_hash:
            raise CheckpointMismatch(
                f"{cfg.ckpt_dir}: checkpoint was trained on a different base model (hash {host['base_hash']}, "
                f"this model {self.base_hash}); use a new --ckpt-dir or the original --model")
        for k in TrainConfig.FIXED:
            if host["train_config"].get(k) != getattr(cfg, k):
                raise CheckpointMismatch(
                    f"{cfg.ckpt_dir}: setting {k}={getattr(cfg, k)!r} differs from the checkpoint's "
                    f"{host['train_config'].get(k)!r}; keep it, or start a new --ckpt-dir")
        self.trainable, self.opt_state, host = self.ckpt.restore(step, self.trainable0, self.opt_state)
        self.step, self.tokens_seen, self.bytes_seen = host["step"], host["tokens_seen"], host["bytes_seen"]
        self.cursor = Cursor.from_json(host["cursor"])
        self.asm.load_state_dict(host["assembler"])
        if cfg.merges:
            self.asm.dyntok = DynamicTokenizer.from_state_dict(host["dyntok"], self.tok.decode_bytes)
        self.replay = ReplayBuffer.from_dict(host["replay"], source=f"{cfg.ckpt_dir} step {step} replay")
        self.replay_windows = host["replay_windows"]
        self.ready = [Window.from_dict(d) for d in host["ready"]]
        log.info("resumed %s at step %d", cfg.ckpt_dir, self.step)
        self._place()

    def _place(self):
        # One placement (replicated over the mesh) for every step's inputs, so the step never retraces.
        self.trainable = replicate(self.trainable, self.mesh)
        self.opt_state = replicate(self.opt_state, self.mesh)

    def _host_state(self, ingest_metrics: dict) -> dict:
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "bytes_seen": self.bytes_seen,
            "cursor": self.cursor.to_json(), "assembler": self.asm.state_dict(),
            "dyntok": self.asm.dyntok.state_dict() if self.asm.dyntok is not None else None,
            "replay": self.replay.to_dict(), "replay_windows": self.replay_windows,
            "ready": [w.to_dict() for w in self.ready], "base_hash": self.base_hash,
            "base_model": self.cfg.model, "model_config": dataclasses.asdict(self.config),
            "train_config": self.cfg.to_dict(), "ingest": {k: int(v) for k, v in ingest_metrics.items()},
            "saved_at": time.time(),
        }

    def save(self, ingest_metrics: dict):
        if self.step in self.ckpt.all_steps():
            return  # this step is already committed (e.g. saved at an interval just before stopping)
        self.ckpt.save(self.step, self.trainable, self.opt_state, self._host_state(ingest_metrics))

    # ----- one step -----
    def _window_text(self, w: Window) -> str:
        ids = w.units.tolist() if w.slots is None else expand(w.units, w.slots, self.config.vocab_size)
        return self.tok.decode(ids)

    def train_step(self, live: list[Window]) -> dict:
        cfg = self.cfg
        n_replay = min(cfg.replay_per_step, len(self.replay)) if len(self.replay) else 0
        idx, isw = self.replay.sample(n_replay) if n_replay else (np.zeros(0, int), np.zeros(0))
        replayed = [Window.from_dict(self.replay_windows[i]["window"]) for i in idx]
        windows = live + replayed
        weights = [1.0] * len(live) + [float(x) for x in isw]
        batch = make_batch(windows, weights, batch_size=self.batch_size, ctx_len=cfg.ctx_len,
                           n_slots=cfg.merge_slots if cfg.merges else None)
        batch = shard_batch(batch, self.mesh)
        nll_frozen = None
        if cfg.replay_priority == "reducible" and live:
            _, mf = self.eval_fn(self.trainable0, self.params, batch)
            nll_frozen = np.asarray(mf["window_nll"])
        t0 = time.perf_counter()
        self.trainable, self.opt_state, m = self.step_fn(self.trainable, self.opt_state, self.params, batch)
        m = jax.device_get(m)
        dt = time.perf_counter() - t0
        wnll = np.asarray(m["window_nll"])  # measured before this update: the surprise
        for j, w in enumerate(live):
            f = None if nll_frozen is None else float(nll_frozen[j])
            i = self.replay.add(w.units, float(wnll[j]), f, text=self._window_text(w))
            if i is not None:
                rec = {"window": w.to_dict(), "nll_frozen": f}
                if i == len(self.replay_windows):
                    self.replay_windows.append(rec)
                else:
                    self.replay_windows[i] = rec
        if n_replay:
            frozen = None
            if cfg.replay_priority == "reducible":
                frozen = [self.replay_windows[i]["nll_frozen"] for i in idx]
            self.replay.update(idx, wnll[len(live):len(live) + n_replay], frozen)
        self.step += 1
        live_tokens = sum(len(w.units) for w in live)
        live_base = sum(w.n_base for w in live)
        live_bytes = sum(w.nbytes for w in live)
        live_bits = float(sum(wnll[j] * len(w.units) for j, w in enumerate(live)) / math.log(2))
        self.tokens_seen += live_base
        self.bytes_seen += live_bytes
        out = {"step": self.step, "time": time.time(), "loss": float(m["loss"]),
               "bits_per_byte": float(m["bits"] / max(m["bytes"], 1.0)),
               "live_bits_per_byte": live_bits / live_bytes if live_bytes else None,
               "live_windows": len(live), "replay_windows": n_replay, "units": live_tokens,
               "base_tokens": live_base, "tokens_per_s": float(m["tokens"]) / dt, "step_s": dt,
               "grad_norm": float(m["grad_norm"]), "nonfinite_total": int(m["nonfinite_total"]),
               "replay_size": len(self.replay), "tokens_seen": self.tokens_seen, "bytes_seen": self.bytes_seen}
        if self.asm.dyntok is not None:
            st = self.asm.dyntok.stats(top=0)
            out.update(merges=st["merges"], promotions=st["promotions"], evictions=st["evictions"],
                       active_slots=st["active_slots"], steps_per_base_token=st["steps_per_base_token"])
        return out

    def _log(self, rec: dict):
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self._tb.add_scalar(k, v, rec["step"])

    # ----- the loop -----
    def run(self, *, progress: bool | None = None) -> dict:
        from tqdm import tqdm
        cfg = self.cfg
        total = cfg.steps
        if total is not None and self.step >= total:
            self.ckpt.close()
            return {"step": self.step, "stopped": "done"}
        ing = _Ingestion(cfg, self.cursor.copy())
        ing.start()
        bar = tqdm(total=total, initial=self.step, disable=None if progress is None else not progress,
                   dynamic_ncols=True, unit="step")
        source_done, stopped = False, "done"
        interrupted = threading.Event()
        prev = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            while total is None or self.step < total:
                if interrupted.is_set():
                    stopped = "interrupted"
                    break
                # Pull events until enough windows are ready for a step (or the source is done).
                while not source_done and len(self.ready) < cfg.live_per_step:
                    try:
                        item = ing.q.get(timeout=0.5)
                    except queue.Empty:
                        if interrupted.is_set():
                            break
                        continue
                    if item is _Ingestion._END:
                        source_done = True
                        self.ready.extend(self.asm.flush())
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        self.cursor.admit(item)
                        self.ready.extend(self.asm.feed(item))
                if interrupted.is_set():
                    stopped = "interrupted"
                    break
                live, self.ready = self.ready[:cfg.live_per_step], self.ready[cfg.live_per_step:]
                if not live and (not len(self.replay) or total is None):
                    stopped = "source exhausted"
                    break
                rec = self.train_step(live)
                if self.step % cfg.log_every == 0:
                    self._log(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", bpb=f"{rec['bits_per_byte']:.3f}",
                                tok_s=f"{rec['tokens_per_s']:.0f}", merges=rec.get("merges", 0),
                                replay=rec["replay_size"], refresh=False)
                if self.step % cfg.save_every == 0:
                    self.save(ing.metrics)
        finally:
            bar.close()
            ing.stop()
            if prev is not None:
                signal.signal(signal.SIGINT, prev)
            self.save(ing.metrics)
            self.ckpt.close()
        return {"step": self.step, "stopped": stopped, "tokens_seen": self.tokens_seen,
                "ckpt_dir": str(self.ckpt.directory)}


def run(cfg: TrainConfig, **kw) -> dict:
    return Trainer(cfg, **kw).run()


DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA / "demo_model.safetensors"
DEMO_TRACES = DATA / "demo_projects"


def demo_setup(ckpt_dir: str, args=None) -> tuple[TrainConfig, tuple]:
    """The offline demo: the project's shipped byte-level model on the shipped sample sessions."""
    from rwkvjax.loaders import load
    if not DEMO_MODEL.is_file():
        raise FileNotFoundError(f"{DEMO_MODEL} is missing; rebuild it with the recipe in {DATA / 'README.md'}")
    cfg = TrainConfig(ckpt_dir=ckpt_dir, source=(str(DEMO_TRACES),), model=str(DEMO_MODEL), steps=60,
                      ctx_len=128, replay_per_step=3, save_every=20, lr=0.1, lr_final=0.01, decay_steps=60)
    return cfg, load(DEMO_MODEL)
