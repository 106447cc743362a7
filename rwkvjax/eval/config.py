"""Settings of the `eval`, `score`, `inspect` and `merge-stats` commands (light to import)."""

from __future__ import annotations

import dataclasses

from rwkvjax.errors import ConfigError
from rwkvjax.memory import DEFAULT_MB
from rwkvjax.options import option
from rwkvjax.train.config import DEFAULT_MODEL, check_positive

REPLAY_PRIORITIES = ("surprise", "reducible")  # `rwkvjax.train.replay.ReplaySettings.priority`


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """What one evaluation arm is; `rwkvjax.eval.prequential` runs any of them by the same code.

    An arm either has a model of its own (it reads every session from its start state S0, trained or not), or
    reads another arm's model: `reset_of` (that arm's S0, returned to every --reset-every tokens) or `memory_of`
    (that arm's predictions mixed with a session memory, `rwkvjax.memory`, every byte scored before the memory
    learns it)."""

    learns: bool = False  # S0 trained on each training session after it is scored (`rwkvjax.train.learner`)
    replay: str | None = None  # a replay buffer of earlier windows, by this priority (REPLAY_PRIORITIES)
    gate: bool = False  # every update through the update gate (`rwkvjax.train.gate`), as `train` runs it
    tbptt: bool = False  # trained on each session's first tbptt_windows x ctx_len tokens as one sequence, the
    #                      gradient flowing through the carried state across its windows
    merges: bool = False  # read and trained in dynamic-merge units (`rwkvjax.merges`), with a hypernetwork
    carry: bool = False  # each session starts from the state the previous one ended in, not from S0
    reset_of: str | None = None
    memory_of: str | None = None
    memory_keeps: bool = True  # the memory keeps every earlier session (False: emptied at each session)

    def __post_init__(self):
        if self.reset_of and self.memory_of:
            raise ConfigError("an arm reads one other arm's model: reset_of or memory_of, not both")
        borrowed = self.reset_of or self.memory_of
        if borrowed and (self.learns or self.merges or self.carry):
            raise ConfigError(f"an arm that reads arm {borrowed}'s model has no model of its own to train, merge "
                              "or carry")
        if (self.replay or self.gate or self.tbptt) and not self.learns:
            raise ConfigError("replay, gate and tbptt shape the updates of an arm that learns (learns=True)")
        if self.replay is not None and self.replay not in REPLAY_PRIORITIES:
            raise ConfigError(f"replay {self.replay!r}: choose from {REPLAY_PRIORITIES}")
        if self.gate and not self.replay:  # the gate's rollback restores the replay buffer too
            raise ConfigError("a gated arm needs a replay buffer (replay=...)")
        if self.merges and (self.carry or self.tbptt):
            raise ConfigError("a merges arm reads each session from S0 in its own windows (no carry, no tbptt)")

    @property
    def own_model(self) -> bool:
        return not (self.reset_of or self.memory_of)

    @property
    def base(self) -> str | None:
        """The arm whose model this arm reads (None: its own)."""
        return self.reset_of or self.memory_of


# The arms of `eval`, in report order. `*_reset`: the state goes back to the start state every --reset-every
# tokens. Session memory arms (rwkvjax/memory): `memory_alone` the frozen model mixed with a memory emptied at
# each session, `memory` with the memory of every earlier session (prequential), `tuned_memory` the same from
# tuned_replay's S0.
ARM_SPECS = {
    "frozen": ArmSpec(),
    "frozen_reset": ArmSpec(reset_of="frozen"),
    "carry": ArmSpec(carry=True),
    "tuned": ArmSpec(learns=True),
    "tuned_reset": ArmSpec(reset_of="tuned"),
    "tuned_tbptt": ArmSpec(learns=True, tbptt=True),
    "tuned_replay": ArmSpec(learns=True, replay="surprise"),
    "tuned_replay_reducible": ArmSpec(learns=True, replay="reducible"),
    "tuned_gated": ArmSpec(learns=True, replay="surprise", gate=True),
    "merges": ArmSpec(learns=True, replay="reducible", merges=True),
    "memory_alone": ArmSpec(memory_of="frozen", memory_keeps=False),
    "memory": ArmSpec(memory_of="frozen"),
    "tuned_memory": ArmSpec(memory_of="tuned_replay"),
}
ARMS = tuple(ARM_SPECS)
MEMORY_ARMS = {n: s.memory_of for n, s in ARM_SPECS.items() if s.memory_of}  # -> the model's arm


def check_arms(specs: dict[str, ArmSpec]) -> None:
    """Raises `ConfigError` unless every arm that reads another arm's model runs beside that arm, and that arm
    has a model of its own that reads the plain token stream (the pass a memory or a reset arm is read from)."""
    for name, spec in specs.items():
        base = spec.base
        if base is None:
            continue
        if base not in specs:
            what = ("is scored from the {} arm's state" if spec.reset_of else
                    "mixes the {} arm's model with a memory").format(base)
            raise ConfigError(f"arm {name} {what}; add {base} to --arms")
        if not specs[base].own_model or specs[base].merges:
            raise ConfigError(f"arm {name} reads arm {base}, which has no plain-token model of its own")



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
        check_arms({n: s for n, s in ARM_SPECS.items() if n in self.arms})
        if not (self.memory_mb >= 1):
            raise ConfigError(f"--memory-mb {self.memory_mb}: must be at least 1 (MB)")
        for name in self.arms:
            if name not in ARMS:
                raise ConfigError(f"unknown arm {name!r}; choose from {ARMS}")
        if self.hypernet and not any(ARM_SPECS[n].merges for n in self.arms):
            users = ", ".join(repr(n) for n, s in ARM_SPECS.items() if s.merges)
            raise ConfigError(f"--hypernet {self.hypernet} is only used by the {users} arm, which --arms leaves out")


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
class InspectConfig:
    checkpoint: str = option(help="the --ckpt-dir of a training run")
    last: int = option(20, help="steps in the recent window of the curve")
    json: bool = option(False, help="machine-readable output")
    plot: str | None = option(None, help="write the loss / bits-per-byte / compression curves to this PNG")


@dataclasses.dataclass(frozen=True)
class MergeStatsConfig:
    checkpoint: str = option(help="the --ckpt-dir of a training run with --merges")
    top: int = option(25, help="merges listed")
