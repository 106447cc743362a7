"""Settings of the `eval`, `score`, `hypernet`, `inspect` and `merge-stats` commands (light to import)."""

from __future__ import annotations

import dataclasses

from rwkvjax.errors import ConfigError
from rwkvjax.memory import DEFAULT_MB
from rwkvjax.options import option
from rwkvjax.train.config import DEFAULT_MODEL, check_positive

# learners and the protocols scored from them (`*_reset`: the state goes back to the start state every
# --reset-every tokens; `tuned_tbptt`: S0 trained on each session's first tbptt_windows x ctx_len tokens as one
# sequence, the gradient flowing through the carried state across its windows)
# `tuned_gated`: tuned_replay with every update through the update gate (train/gate.py), as `train` runs it)
# session memory arms (rwkvjax/memory): `memory_alone` the frozen model mixed with a memory emptied at each session,
# `memory` with the memory of every earlier session (prequential), `tuned_memory` the same from tuned_replay's S0
ARMS = ("frozen", "frozen_reset", "carry", "tuned", "tuned_reset", "tuned_tbptt", "tuned_replay",
        "tuned_replay_reducible", "tuned_gated", "merges", "memory_alone", "memory", "tuned_memory")
MEMORY_ARMS = {"memory_alone": "frozen", "memory": "frozen", "tuned_memory": "tuned_replay"}  # -> the model's arm



@dataclasses.dataclass(frozen=True)
class EvalConfig:
    traces: str = option(help="folder of Claude Code transcripts")
    out: str = option(help="report folder (REPORT.md, prequential.png, summary.json; progress/ keeps the finished "
                           "sessions: the same command continues an interrupted or --max-sessions run)")
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    heldout_fraction: float = option(1 / 3, help="the latest sessions (by start time, a subagent with its parent) "
                                                 "held out: this share of them")
    ctx_len: int = option(512, help="training window and longest scoring call")
    tbptt_windows: int = option(8, help="tuned_tbptt: windows of each session's start trained as one sequence")
    reset_every: int = option(512, help="*_reset arms: tokens between returns to the start state")
    live_per_step: int = option(2, help="new windows per update")
    replay_per_step: int = option(2, help="replayed windows per update (replay arms)")
    max_windows_per_session: int = option(32, help="training windows taken from each session (its start first)")
    lr: float = option(0.1, help="S0 peak learning rate")
    lr_final: float = option(0.01, help="S0 final learning rate")
    hyper_lr: float = option(1e-3, help="hypernetwork peak learning rate (merges arm)")
    hypernet: str | None = option(None, help="the merges arm starts from this trained hypernetwork (`cli.py "
                                             "hypernet`); default: untrained")
    arms: tuple[str, ...] = option(ARMS, choices=ARMS, help="arms to run")
    canaries: tuple[str, ...] = option((), help="canary text files (default: stdlib textwrap.py and the Python "
                                                "licence)")
    seed: int = option(0, help="random seed")
    bootstrap: int = option(10_000, help="bootstrap resamples for the intervals")
    max_sessions: int | None = option(None, help="score at most this many sessions of the stream (time order, "
                                                 "the split still over all of them); rerun with more to continue")
    memory_mb: float = option(DEFAULT_MB, help="size of each memory arm's session memory (MB)")

    def __post_init__(self):
        check_positive(self, "ctx_len", "live_per_step", "max_windows_per_session", "lr", "bootstrap",
                       "tbptt_windows", "reset_every", "max_sessions")
        check_positive(self, "replay_per_step", "lr_final", "hyper_lr", allow_zero=True)
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--heldout-fraction {self.heldout_fraction}: must be in (0, 1)")
        for base in ("frozen", "tuned"):
            if f"{base}_reset" in self.arms and base not in self.arms:
                raise ConfigError(f"arm {base}_reset is scored from the {base} arm's state; add {base} to --arms")
        for arm, base in MEMORY_ARMS.items():
            if arm in self.arms and base not in self.arms:
                raise ConfigError(f"arm {arm} mixes the {base} arm's model with a memory; add {base} to --arms")
        if not (self.memory_mb >= 1):
            raise ConfigError(f"--memory-mb {self.memory_mb}: must be at least 1 (MB)")
        for name in self.arms:
            if name not in ARMS:
                raise ConfigError(f"unknown arm {name!r}; choose from {ARMS}")
        if self.hypernet and "merges" not in self.arms:
            raise ConfigError(f"--hypernet {self.hypernet} is only used by the 'merges' arm, which --arms leaves out")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    files: tuple[str, ...] = option(positional=True, help="UTF-8 text files")
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    checkpoint: str | None = option(None, help="a --ckpt-dir of `train`: use its tuned S0 and its session memory")
    dtype: str = option("fp32", choices=("fp32", "bf16", "int8"), help="weight dtype: int8 quantizes the large "
                        "matrices on load (the recurrence and state stay fp32)")
    memory: bool | None = option(None, help="mix the model with a session memory, each byte scored before the "
                                             "memory learns it, one memory through the files in the order given: the "
                                             "run's memory with --checkpoint, else a new one; --no-memory: the model "
                                             "alone (auto: the run's memory when --checkpoint has one, else none)")
    memory_mb: float = option(DEFAULT_MB, help="size of a new session memory (MB)")

    def __post_init__(self):
        if not (self.memory_mb >= 1):
            raise ConfigError(f"--memory-mb {self.memory_mb}: must be at least 1 (MB)")


@dataclasses.dataclass(frozen=True)
class HyperTrainConfig:
    traces: str = option(help="folder of Claude Code transcripts")
    out: str = option(help="output .safetensors file")
    model: str = option(DEFAULT_MODEL, help="the model the hypernetwork is trained for")
    heldout_fraction: float = option(1 / 3, help="the latest sessions held out (as in `eval`): this share")
    ctx_len: int = option(512, help="units per training window")
    batch: int = option(8, help="windows per step")
    steps: int = option(600, help="training steps")
    lr: float = option(3e-3, help="peak learning rate")
    lr_final: float = option(3e-4, help="final learning rate")
    warmup: int = option(30, help="warmup steps")
    seed: int = option(0, help="random seed")
    window: int = option(512, help="dynamic tokenizer: bigram occurrences watched")
    threshold: int = option(3, help="dynamic tokenizer: occurrences that promote a bigram")
    n_slots: int = option(256, help="dynamic tokenizer: slots")
    speed_steps: int = option(8, help="training steps timed per arm for the speed comparison")
    corpus: tuple[str, ...] = option((), help="train on these text files/folders instead of the training sessions "
                                              "(held-out sessions are still scored)")
    max_corpus_bytes: int = option(2_000_000, help="corpus bytes read at most")

    def __post_init__(self):
        for name in ("ctx_len", "batch", "steps", "n_slots", "window", "threshold"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--heldout-fraction {self.heldout_fraction}: must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    checkpoint: str = option(help="the --ckpt-dir of a training run")
    last: int = option(20, help="steps in the recent window of the curve")
    json: bool = option(False, help="machine-readable output")
    plot: str | None = option(None, help="write the loss / bits-per-byte / compression curves to this PNG")


@dataclasses.dataclass(frozen=True)
class MergeStatsConfig:
    checkpoint: str = option(help="the --ckpt-dir of a training run with --merges")
    top: int = option(25, help="merges listed")
