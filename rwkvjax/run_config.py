"""Settings of the `train` and `pretrain` commands (light to import: the CLI builds its flags from them)."""

from __future__ import annotations

import dataclasses
import math

from rwkvjax.config import Config

DEFAULT_MODEL = "RWKV/RWKV7-Goose-World3-1.5B-HF"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    ckpt_dir: str
    source: tuple[str, ...] = ("live",)
    model: str = DEFAULT_MODEL
    steps: int | None = 1000            # total for the checkpoint directory; None = forever
    ctx_len: int = 512
    live_per_step: int = 1
    replay_per_step: int = 3
    merges: bool = False               # off by default: an untrained hypernetwork costs 26% (benchmarks/RESULTS.md)
    hypernet: str | None = None        # with merges: start from a `python cli.py hypernet` file (recommended)
    train_shift: bool = False
    lr: float = 1.0
    lr_final: float = 0.01
    hyper_lr: float = 1e-3
    decay_steps: int = 1000
    clip_norm: float = 1.0
    replay_capacity: int = 1000
    replay_priority: str = "surprise"   # or "reducible"
    replay_admission: str = "priority"  # or "fifo"
    replay_alpha: float = 0.6
    replay_beta: float = 0.4
    merge_window: int = 512
    merge_threshold: int = 3
    merge_slots: int = 256
    include_thinking: bool = True
    include_subagents: bool = True
    max_tool_output: int = 16384
    save_every: int = 50
    keep: int = 3
    log_every: int = 1
    dtype: str = "fp32"
    wkv_impl: str = "auto"
    seed: int = 0
    tensorboard: bool = False
    # Settings that must not change when resuming (the rest may, e.g. steps or logging).
    FIXED = ("ctx_len", "live_per_step", "replay_per_step", "merges", "train_shift", "merge_window",
             "merge_threshold", "merge_slots", "replay_capacity", "replay_priority", "replay_admission")

    def __post_init__(self):
        if self.hypernet and not self.merges:
            raise ValueError(f"--hypernet {self.hypernet} is only used with --merges; add --merges or drop it")

    @property
    def batch_size(self) -> int:
        return self.live_per_step + self.replay_per_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    out: str
    corpus: tuple[str, ...] = ()
    vocab: str = "byte"        # byte | world
    n_layer: int = 4
    n_embd: int = 256
    ctx_len: int = 256
    batch: int = 16
    steps: int = 3000
    lr: float = 2e-3
    lr_final: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    heldout_every: int = 20     # every k-th file (by path hash) is held out
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 250
    max_bytes: int = 200_000_000
    seed: int = 0
    wkv_impl: str = "auto"

    def model_config(self) -> Config:
        C = self.n_embd
        V = 256 if self.vocab == "byte" else 65536
        lora = lambda k: max(32, int(round(k * math.sqrt(C) / 32)) * 32)
        return Config(vocab_size=V, n_embd=C, n_layer=self.n_layer, dim_ffn=4 * C, d_decay=lora(1.8),
                      d_aaa=lora(1.8), d_mv=lora(1.3), d_gate=max(32, int(round(0.6 * C ** 0.8 / 32)) * 32),
                      head_size=64)
