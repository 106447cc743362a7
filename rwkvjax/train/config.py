"""Settings of the `train`, `pretrain`, `consolidate` and `hypernet` commands: each field is one flag (light to
import; see `options`)."""

from __future__ import annotations

import dataclasses
import math

from rwkvjax.errors import ConfigError
from rwkvjax.memory import DEFAULT_MB
from rwkvjax.model.config import Architecture
from rwkvjax.options import WKV_IMPLS, option
from rwkvjax.train.remat import CHOICES as REMAT_CHOICES
from rwkvjax.train.remat import POLICIES as REMAT_POLICIES
from rwkvjax.train.resume import ResumeRule

DEFAULT_MODEL = "RWKV/RWKV7-Goose-World3-1.5B-HF"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_positive(cfg, *names: str, allow_zero: bool = False) -> None:
    """Refuse a value <= 0 (< 0 with allow_zero) or non-finite, naming the flag."""
    for n in names:
        v = getattr(cfg, n)
        if v is None:
            continue
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(f"{_flag(n)} {v}: must be {'>= 0' if allow_zero else '> 0'} and finite")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    ckpt_dir: str | None = option(None, help="checkpoint folder: resumed when it holds a run (required unless --demo)")
    source: tuple[str, ...] = option(("live",), metavar="live|replay|PATH",
                                     help="live (history, then follow new lines), replay (history, then stop), "
                                          "or .jsonl files/folders")
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    steps: int | None = option(1000, help="total steps for this checkpoint folder")
    forever: bool = option(False, help="train until interrupted (Ctrl-C saves and exits); overrides --steps")
    demo: bool = option(False, help="one-minute offline demo: the shipped small model on shipped sample sessions")
    ctx_len: int = option(512, help="units per training window")
    live_per_step: int = option(1, help="new windows per step")
    replay_per_step: int = option(3, help="replayed windows per step")
    merges: bool = option(False, help="dynamic merges + hypernetwork (off by default: an untrained hypernetwork "
                                      "costs 26%, benchmarks/RESULTS.md)")
    hypernet: str | None = option(None, help="with --merges: start from this `cli.py hypernet` file")
    train_shift: bool = option(False, help="also train the initial token-shift states")
    lr: float = option(0.3, help="S0 peak learning rate (0.3: measured best of 1, 0.3, 0.1, 0.03 on the demo model "
                                 "with the gate on; at 1.0 nearly every update was rolled back, "
                                 "benchmarks/RESULTS.md \"Default state-tuning learning rate\")")
    lr_final: float = option(0.01, help="S0 learning rate at the end of the cosine decay")
    hyper_lr: float = option(1e-3, help="hypernetwork peak learning rate")
    decay_steps: int = option(1000, help="cosine horizon (constant at the final LR afterwards)")
    clip_norm: float = option(1.0, help="global gradient-norm clip")
    replay_capacity: int = option(1000, help="windows kept for replay")
    replay_priority: str = option("surprise", choices=("surprise", "reducible"), help="replay priority rule")
    replay_admission: str = option("priority", choices=("priority", "fifo"), help="who leaves a full buffer")
    replay_alpha: float = option(0.6, help="prioritisation exponent")
    replay_beta: float = option(0.4, help="importance-weight exponent")
    merge_window: int = option(512, help="bigram occurrences the merge counter watches")
    merge_threshold: int = option(3, help="occurrences in the window that promote a bigram")
    merge_slots: int = option(256, help="virtual-token slots")
    include_thinking: bool = option(True, help="train on the assistant's thinking")
    include_subagents: bool = option(True, help="train on subagent transcripts")
    max_tool_output: int = option(16384, help="characters kept per tool output (0: all)")
    save_every: int = option(50, help="steps between checkpoints")
    keep: int = option(3, help="checkpoints kept")
    log_every: int = option(1, help="steps between metrics.jsonl records")
    eval_every: int = option(0, help="steps between evaluations of --eval-texts under the current S0 (0: off)")
    eval_texts: tuple[str, ...] = option((), help="text files for --eval-every (default: stdlib textwrap.py and "
                                                  "the Python licence)")
    dtype: str = option("fp32", choices=("fp32", "bf16"), help="weight dtype (the recurrence and state stay fp32)")
    wkv_impl: str = option("auto", choices=WKV_IMPLS, help="WKV implementation")
    remat: str = option("auto", choices=REMAT_CHOICES,
                        help="what the backward pass recomputes: none (fastest; every layer's activations "
                             "kept), full (each layer recomputed; least memory), dots (matmul outputs kept; more "
                             "memory than none here, for comparison); auto: none while its activations fit in a "
                             "quarter of the available memory, else full")
    seed: int = option(0, help="random seed (replay sampling, hypernetwork init)")
    tensorboard: bool = option(False, help="also write TensorBoard scalars (needs the `tensorboard` extra)")
    gate: bool = option(True, help="update gate: probe canaries after every update, roll back or quarantine")
    canaries: tuple[str, ...] = option((), help="gate canary texts (default: stdlib textwrap.py and the Python "
                                                "licence)")
    gate_canary_rel: float = option(0.01, help="gate: roll back past this relative canary bpb rise over the start")
    gate_z: float = option(6.0, help="gate: roll back at this robust z of the canary change")
    gate_quarantine_bpb: float = option(1.85, help="gate: live windows whose frozen bpb is this many times the "
                                                  "canaries' are out of distribution (calibration: "
                                                  "benchmarks/gate_calibration.py)")
    gate_quarantine_grad: float = option(1.0, help="gate: an update whose start-state gradient norm is this many "
                                                   "times the canaries' is a heavy write; both together quarantine")
    gate_slice_every: int = option(16, help="gate: every n-th new window is held out as the recent probe slice "
                                            "(0: none)")
    lr_backoff_after: int = option(4, help="gate: halve the learning rate after this many updates in a row were "
                                           "rolled back (0: never); the run's state, kept across resumes "
                                           "(benchmarks/RESULTS.md \"Default state-tuning learning rate\")")
    lr_backoff_floor: float = option(0.01, help="gate: the backoff never takes the peak learning rate below this")
    stall_warn_after: int = option(8, help="gate: warn (one line) once this many updates in a row were rolled back; "
                                           "`inspect` and the dashboard then say the run is stalled (measured: "
                                           "runs at --lr 0.3 or lower rolled back no update, one at 1.0 had 8 in a "
                                           "row by step 11; benchmarks/RESULTS.md \"Default state-tuning learning rate\")")
    states: str | None = option(None, help="named-states folder: the tuned S0 is written there at every checkpoint")
    state_name: str | None = option(None, help="with --states: the name it is stored under (default: the "
                                               "checkpoint folder's name)")
    state_scope: str = option("global", choices=("global", "per-project"),
                              help="one start state, or one per Claude Code project folder plus the global one "
                                   "(stored as <project>; needs --states)")
    consolidate_every: int = option(0, help="with per-project states: steps between sleep consolidations of the "
                                            "project states into the global one (0: never)")
    memory: bool = option(True, help="session memory: every live window is scored by the model mixed with a memory "
                                     "of the run's text, then learned (saved with the checkpoint and the named "
                                     "states); --no-memory: S0 alone")
    memory_mb: float = option(DEFAULT_MB, help="size bound of each session memory in MB (the run's, and one per "
                                               "project with --state-scope per-project); the oldest history goes "
                                               "first")
    # Settings that must not change when resuming (the rest may, e.g. steps or logging).
    RESUME = ResumeRule(fixed=("dtype", "ctx_len", "live_per_step", "replay_per_step", "merges", "train_shift",
                               "merge_window", "merge_threshold", "merge_slots", "replay_capacity",
                               "replay_priority", "replay_admission", "state_scope"))

    def __post_init__(self):
        if self.forever:
            object.__setattr__(self, "steps", None)
        if self.ckpt_dir is None and not self.demo:
            raise ConfigError("train: --ckpt-dir is required (or use --demo)")
        if self.state_name and not self.states:
            raise ConfigError(f"--state-name {self.state_name} needs --states DIR (where to store it)")
        if self.state_scope == "per-project" and not self.states:
            raise ConfigError("--state-scope per-project needs --states DIR (where the project states are stored)")
        if self.state_scope == "per-project" and self.merges:
            raise ConfigError("--state-scope per-project does not combine with --merges yet (the hypernetwork and "
                              "its merges are shared, the start states are not); drop one of them")
        if self.consolidate_every and (self.state_scope != "per-project" or not self.gate):
            raise ConfigError(f"--consolidate-every {self.consolidate_every} needs --state-scope per-project and "
                              "the update gate (its canaries and held-out slices are what consolidation is "
                              "checked on)")
        if self.remat not in REMAT_CHOICES:
            raise ConfigError(f"--remat {self.remat!r}: choose one of {', '.join(REMAT_CHOICES)}")
        if self.hypernet and not self.merges:
            raise ConfigError(f"--hypernet {self.hypernet} is only used with --merges; add --merges or drop it")
        check_positive(self, "steps", "ctx_len", "live_per_step", "lr", "decay_steps", "replay_capacity",
                       "merge_window", "merge_threshold", "merge_slots", "save_every", "keep", "log_every")
        check_positive(self, "replay_per_step", "clip_norm", "lr_final", "hyper_lr", "max_tool_output",
                       "eval_every", "replay_alpha", "replay_beta", "gate_slice_every", "consolidate_every",
                       "lr_backoff_after", allow_zero=True)
        check_positive(self, "gate_canary_rel", "gate_z", "gate_quarantine_bpb", "gate_quarantine_grad",
                       "memory_mb", "lr_backoff_floor", "stall_warn_after")
        if self.ctx_len < 2:
            raise ConfigError(f"--ctx-len {self.ctx_len}: a window needs at least 2 units")
        if self.replay_per_step > self.replay_capacity:
            raise ConfigError(f"--replay-per-step {self.replay_per_step} exceeds --replay-capacity "
                              f"{self.replay_capacity}")

    @property
    def batch_size(self) -> int:
        return self.live_per_step + self.replay_per_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    out: str = option(help="output folder: checkpoints, metrics.jsonl, recipe.json, model.safetensors")
    corpus: tuple[str, ...] = option((), help="text files or folders, never your trace data (default: the standard "
                                              "library, installed packages, /usr/share/doc and man pages)")
    vocab: str = option("byte", choices=("byte", "world"), help="byte (256 ids) or the RWKV World vocabulary")
    n_layer: int = option(4, help="layers")
    n_embd: int = option(256, help="channels (a multiple of 64)")
    ctx_len: int = option(256, help="tokens per training window (one backward pass)")
    windows_per_segment: int = option(8, help="truncated BPTT: windows read in a row with the state carried "
                                              "(the context the model learns to use is ctx_len x this)")
    copy_prob: float = option(0.25, help="share of segments that repeat a chunk of text later (teaches copying)")
    copy_noise: float = option(0.0, help="share of those chunks drawn as noise (bytes or tokens sampled one by one "
                                         "from the corpus): only copying predicts their repeat")
    batch: int = option(16, help="windows per step")
    steps: int = option(3000, help="total optimizer steps")
    lr: float = option(2e-3, help="peak learning rate")
    lr_final: float = option(1e-4, help="final learning rate")
    warmup: int = option(100, help="linear warmup steps")
    weight_decay: float = option(0.1, help="AdamW weight decay on the weight matrices")
    remat: str = option("none", choices=REMAT_POLICIES,
                        help="what the backward pass recomputes (as `train --remat`): none (fastest), full (each "
                             "layer; less memory, ~1.3x the time), dots (matmul outputs kept)")
    init_from: str | None = option(None, help="start from this model's weights (a fresh optimizer); e.g. to "
                                              "continue a shipped model")
    heldout_every: int = option(10, help="every k-th package (by name hash) is held out")
    heldout_packages: tuple[str, ...] = option((), help="hold out exactly these packages (`<root name>/<first "
                                                        "folder>`, e.g. site-packages/networkx)")
    max_file_bytes: int = option(262_144, help="longer files are cut (on a line end) at this size")
    eval_every: int = option(100, help="steps between held-out evaluations")
    eval_bytes: int = option(65_536, help="held-out bytes scored per evaluation (state carried per file)")
    save_every: int = option(250, help="steps between checkpoints (each also exports model.safetensors)")
    max_bytes: int = option(400_000_000, help="corpus bytes read at most")
    seed: int = option(0, help="random seed")
    wkv_impl: str = option("auto", choices=WKV_IMPLS, help="WKV implementation")
    # settings a resumed run must keep (the rest, e.g. steps, lr or eval cadence, may change); a recipe written
    # before a setting existed does not hold it, and is taken as made with this run's value
    RESUME = ResumeRule(fixed=("vocab", "n_layer", "n_embd", "ctx_len", "windows_per_segment", "batch", "seed",
                               "corpus", "heldout_every", "heldout_packages", "max_file_bytes", "max_bytes"),
                        absent_ok=True, saved_as="the run in this folder:")

    def __post_init__(self):
        check_positive(self, "n_layer", "n_embd", "ctx_len", "windows_per_segment", "batch", "steps", "lr",
                       "heldout_every", "eval_every", "eval_bytes", "save_every", "max_bytes", "max_file_bytes")
        check_positive(self, "lr_final", "warmup", "weight_decay", "copy_prob", "copy_noise", allow_zero=True)
        for name in ("copy_prob", "copy_noise"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: a probability is at most 1")
        if self.vocab not in ("byte", "world"):
            raise ConfigError(f"--vocab {self.vocab!r}: choose byte or world")
        if self.n_embd % 64:
            raise ConfigError(f"--n-embd {self.n_embd}: must be a multiple of the head size 64")
        if self.remat not in REMAT_POLICIES:  # no 'auto': its estimate is of a step whose weights are frozen
            raise ConfigError(f"--remat {self.remat!r}: choose one of {', '.join(REMAT_POLICIES)}")

    def model_config(self) -> Architecture:
        C = self.n_embd
        V = 256 if self.vocab == "byte" else 65536
        lora = lambda k: max(32, int(round(k * math.sqrt(C) / 32)) * 32)
        return Architecture(vocab_size=V, n_embd=C, n_layer=self.n_layer, dim_ffn=4 * C, d_decay=lora(1.8),
                      d_aaa=lora(1.8), d_mv=lora(1.3), d_gate=max(32, int(round(0.6 * C ** 0.8 / 32)) * 32),
                      head_size=64)


@dataclasses.dataclass(frozen=True)
class TracesConfig:
    """`traces`: exactly what training would see from Claude Code sessions, after redaction."""

    source: tuple[str, ...] = option(metavar="live|replay|PATH",
                                     help="live (history, then follow appends), replay (history), or .jsonl "
                                          "files/folders")
    format: str = option("text", choices=("text", "jsonl"), help="rendered training text or typed events")
    stats: bool = option(False, help="counts per event type, session and project instead")
    model: str | None = option(None, help="with --stats: also count tokens and merges with this model's tokenizer")
    projects_dir: str | None = option(None, help="Claude Code projects folder (default $CLAUDE_PROJECTS_DIR or "
                                                 "~/.claude/projects)")
    reader: str = option("auto", choices=("auto", "ccsniff", "python"),
                         help="explicit paths are replayed by the Python reader unless ccsniff is forced")
    thinking: bool = option(True, help="include the assistant's thinking")
    meta: bool = option(False, help="include isMeta user lines")
    system: bool = option(False, help="include system lines")
    subagents: bool = option(True, help="include subagent transcripts")
    max_tool_output: int = option(16384, help="characters kept per tool output (0: all)")


@dataclasses.dataclass(frozen=True)
class ConsolidateConfig:
    ckpt_dir: str = option(help="checkpoint folder of a `train --state-scope per-project` run (read only)")
    states: str | None = option(None, help="named-states folder (default: the run's --states)")
    steps: int = option(32, help="AdamW steps on the global start state")
    batch: int = option(4, help="replay windows per step, projects in turn")
    lr: float = option(0.1, help="peak learning rate (cosine to a tenth)")
    tolerance: float = option(0.0, help="bits/byte a project's held-out slice may get worse and still promote")
    canary_rel: float = option(0.01, help="relative canary rise over the run's start that blocks promotion")
    seed: int = option(0, help="window sampling seed")

    def __post_init__(self):
        check_positive(self, "steps", "batch", "lr", "canary_rel")
        check_positive(self, "tolerance", allow_zero=True)


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
    metrics: str | None = option(None, help="append every step's record to this JSON-lines file (as `train`'s "
                                            "metrics.jsonl)")

    def __post_init__(self):
        for name in ("ctx_len", "batch", "steps", "n_slots", "window", "threshold"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--heldout-fraction {self.heldout_fraction}: must be in (0, 1)")
