"""Settings of the `generate` command (light to import)."""

from __future__ import annotations

import dataclasses
import math

from rwkvjax.errors import ConfigError
from rwkvjax.memory import DEFAULT_MB
from rwkvjax.options import option
from rwkvjax.train.config import DEFAULT_MODEL

# Speculative decoding's default: drafts verified per forward (benchmarks/speculative.py measures it on this CPU:
# tokens/s on a prompt whose reply copies from the context and on one that does not).
DEFAULT_DRAFT_TOKENS = 15
# A verification is one forward of K + 1 tokens: longer chunks cost more than drafts that long save.
MAX_DRAFT_TOKENS = 64

# The server's bounds on what one client can make it do (issue 25 item 8); each default is argued in its help.
DEFAULT_MAX_BODY_MB = 8.0
DEFAULT_READ_TIMEOUT_S = 15.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_TOKENS_CAP = 4096
DEFAULT_TTT_QUEUE = 32
DEFAULT_TTT_MAX_CONVERSATIONS = 256
_BODY_HELP = ("request bodies over this many MB get 413, refused while they are read (the Content-Length, then "
              "the bytes as they arrive). 8 MB is ten times the JSON of a --max-prompt-tokens prompt at 4 bytes "
              "a token, every character \\u-escaped (6 bytes); a body that large parses in well under a second")
_READ_TIMEOUT_HELP = ("a client must send its request headers within this many seconds of connecting, and each "
                      "piece of its body within this many seconds of the last (else 408, or the connection is "
                      "closed): slow or stalled clients cannot hold connections. 15 s is far above what any "
                      "client that is sending needs, even over a slow link")
_CONNECTIONS_HELP = ("open connections at most; more get 503. 512: above --max-batch plus --max-waiting "
                     "(320 requests by default) with room for probes and idle keep-alive connections, and below "
                     "the usual limit of 1024 open files per process")
_MAX_TOKENS_CAP_HELP = ("a request's max_tokens above this is a 400 naming it. 4096: a reply that long holds a batch "
                        "row for minutes on a CPU; the model itself has no context limit to take instead")
_TTT_QUEUE_HELP = ("with --ttt: conversations waiting for their tuning at most. A conversation's newer turn "
                   "replaces its queued older one (its text holds the older), so one conversation takes one "
                   "place; when all are taken a new conversation's request gets 429 with Retry-After. 32 turns "
                   "of 4 steps are about one to three minutes of tuning on a CPU (measured: 2-6 s a turn)")
_TTT_MAX_CONV_HELP = ("with --ttt: conversation states kept at most; beyond it the least recently tuned are "
                      "removed (a conversation a state was forked from stays). 256 x 13 MB (a 1.5B model's "
                      "state and session memory) is about 3.3 GB")

# Shutdown (SIGTERM, Ctrl-C): seconds running replies get to finish before each is ended with a final chunk.
# 8 s: the whole stop must fit in `docker stop`'s 10 s before its SIGKILL (the tightest common grace period;
# Kubernetes gives 30 s, systemd 90 s), 2 s left to write the final events and exit. In 8 s a default-length
# reply (256 tokens) of a 0.1B model finishes at the 33.5 tokens/s measured for B=1 decode on a 2-core CPU
# (benchmarks/RESULTS.md, "Forward vs official"); larger models on a CPU end theirs cut, with a proper ending.
DEFAULT_DRAIN_S = 8.0
_DRAIN_HELP = ("on SIGTERM or Ctrl-C: new requests get 503, running replies get this many seconds to finish; "
               "then each still running ends with a final chunk (finish_reason \"length\") and [DONE], and a "
               "request not yet started gets 503 (0: end them at once)")

_MEMORY_HELP = ("sample from the mixture of the model and a session memory (--no-memory: the model alone, as "
                "before the memory existed)")
_MEMORY_MB_HELP = "size of a new session memory (MB): one that starts empty"
_DRAFT_HELP = (f"speculative decoding: the memory's drafts verified per forward, at most (0: off; default "
               f"{DEFAULT_DRAFT_TOKENS} with the memory, 0 without); the text is what plain sampling gives")


def _check_memory(cfg) -> None:
    if cfg.draft_tokens is not None:
        if not 0 <= cfg.draft_tokens <= MAX_DRAFT_TOKENS:
            raise ConfigError(f"--draft-tokens {cfg.draft_tokens}: must be in 0..{MAX_DRAFT_TOKENS} (0 turns "
                              "speculative decoding off)")
        if cfg.draft_tokens > 0 and not cfg.memory:
            raise ConfigError(f"--draft-tokens {cfg.draft_tokens}: the drafts come from the session memory, which "
                              "--no-memory turns off; drop one of the two")
    if not (math.isfinite(cfg.memory_mb) and cfg.memory_mb >= 1):
        raise ConfigError(f"--memory-mb {cfg.memory_mb}: must be at least 1 (MB)")


def draft_tokens_of(cfg) -> int:
    """The K in effect: the flag, else the default with the memory, else 0."""
    if not cfg.memory:
        return 0
    return DEFAULT_DRAFT_TOKENS if cfg.draft_tokens is None else cfg.draft_tokens


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    prompt: str = option(help="prompt text (backslash escapes such as \\n are read as the characters they name)")
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    max_tokens: int = option(200, help="tokens to sample at most")
    temperature: float = option(1.0, help="sampling temperature (0: greedy)")
    top_p: float = option(0.85, help="nucleus mass kept, in (0, 1]")
    seed: int = option(0, help="sampling seed")
    dtype: str = option("fp32", choices=("fp32", "bf16", "int8"),
                        help="weight dtype: int8 quantizes the large matrices on load (a quarter of the memory; an "
                             "int8 file loads as int8 anyway); bf16 is refused on a CPU backend")
    checkpoint: str | None = option(None, help="a --ckpt-dir of `train`: start from its tuned state (S0) and its "
                                               "session memory")
    memory: bool = option(True, help=_MEMORY_HELP)
    memory_mb: float = option(DEFAULT_MB, help=_MEMORY_MB_HELP)
    draft_tokens: int | None = option(None, help=_DRAFT_HELP)

    def __post_init__(self):
        _check_memory(self)
        if self.max_tokens <= 0:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be >= 1")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ConfigError(f"--temperature {self.temperature}: must be finite and >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p {self.top_p}: must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    states: str | None = option(None, help="named-states folder (`cli.py state`); requests select one by `model`")
    host: str = option("127.0.0.1", help="address to bind (loopback by default)")
    port: int = option(8000, help="port")
    api_key: str | None = option(None, help="require 'Authorization: Bearer KEY' on every route")
    cors_origin: str | None = option(None, metavar="ORIGIN", help="let web pages of this origin (say "
                                     "https://app.example) call the server; others are refused (CORS off)")
    dtype: str = option("fp32", choices=("fp32", "bf16", "int8"),
                        help="weight dtype: int8 quantizes the large matrices on load (a quarter of the memory; an "
                             "int8 file loads as int8 anyway); bf16 is refused on a CPU backend")
    max_batch: int = option(64, help="requests decoded together at most (continuous batching)")
    max_waiting: int = option(256, help="requests queued at most; beyond it clients get 429 with Retry-After")
    max_prompt_tokens: int = option(32768, help="longer prompts get 413")
    max_tokens: int = option(256, help="default max_tokens of a request")
    max_tokens_cap: int = option(DEFAULT_MAX_TOKENS_CAP, help=_MAX_TOKENS_CAP_HELP)
    max_body_mb: float = option(DEFAULT_MAX_BODY_MB, help=_BODY_HELP)
    read_timeout_s: float = option(DEFAULT_READ_TIMEOUT_S, help=_READ_TIMEOUT_HELP)
    max_connections: int = option(DEFAULT_MAX_CONNECTIONS, help=_CONNECTIONS_HELP)
    prefill_chunk: int = option(256, help="prompt tokens prefilled between two decode steps")
    cache_mb: int = option(256, help="prefix-state cache budget (MB)")
    warmup: bool = option(True, help="compile every decode batch size and prefill piece before serving")
    ttt: bool = option(False, help="test-time training: a chat request with a `session` field adapts that "
                                   "conversation's own state conv/<model>/<session> between turns (needs --states)")
    ttt_steps: int = option(4, help="with --ttt: gated state-tuning steps per turn")
    ttt_lr: float = option(0.05, help="with --ttt: learning rate of those steps")
    ttt_queue: int = option(DEFAULT_TTT_QUEUE, help=_TTT_QUEUE_HELP)
    ttt_max_conversations: int = option(DEFAULT_TTT_MAX_CONVERSATIONS, help=_TTT_MAX_CONV_HELP)
    dashboard: str | None = option(None, metavar="CKPT_DIR", help="also serve the live dashboard of this `train "
                                                                  "--ckpt-dir` at /dashboard/ (read-only)")
    memory: bool = option(True, help=_MEMORY_HELP + "; a request's `model` state brings its memory, the "
                                                    "conversation's text goes into a scratch copy")
    memory_mb: float = option(DEFAULT_MB, help=_MEMORY_MB_HELP + " (`base`, or a state without one)")
    draft_tokens: int | None = option(None, help=_DRAFT_HELP)
    drain_s: float = option(DEFAULT_DRAIN_S, help=_DRAIN_HELP)
    access_log: bool = option(True, help="one line per request on stderr: client, method, path, status, time, "
                                         "tokens in/out (never the body or the key)")

    def __post_init__(self):
        _check_memory(self)
        if not (math.isfinite(self.drain_s) and self.drain_s >= 0):
            raise ConfigError(f"--drain-s {self.drain_s}: must be a number of seconds >= 0")
        for name in ("port", "max_batch", "max_waiting", "max_prompt_tokens", "max_tokens", "prefill_chunk",
                     "max_tokens_cap", "max_connections", "ttt_queue", "ttt_max_conversations"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.max_tokens > self.max_tokens_cap:
            raise ConfigError(f"--max-tokens {self.max_tokens}: the default must not exceed --max-tokens-cap "
                              f"{self.max_tokens_cap}")
        for name in ("max_body_mb", "read_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a number > 0")
        if self.ttt and not self.states:
            raise ConfigError("--ttt needs --states DIR (each conversation's state is stored there)")
        if self.ttt_steps <= 0 or not self.ttt_lr > 0:
            raise ConfigError(f"--ttt-steps {self.ttt_steps} / --ttt-lr {self.ttt_lr}: must be > 0")
        if self.cache_mb < 0:
            raise ConfigError(f"--cache-mb {self.cache_mb}: must be >= 0")
        if self.prefill_chunk & (self.prefill_chunk - 1):
            raise ConfigError(f"--prefill-chunk {self.prefill_chunk}: must be a power of two")
