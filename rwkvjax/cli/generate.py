"""`cli.py generate`: stream sampled text from a model, optionally from a training run's tuned state, from the
mixture of the model and a session memory (the run's memory with --checkpoint, else an empty one; --no-memory:
the model alone), with speculative decoding from the memory's drafts."""

from __future__ import annotations

import re
import sys

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.serve.config import GenerateConfig

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""`\n`, `\t`, `\r` and `\\` typed in a shell argument become the characters they name."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def add_arguments(p):
    add_dataclass_args(p, GenerateConfig)


def run(args) -> None:
    from rwkvjax.io.convert import refuse_slow_dtype
    from rwkvjax.io.formats import load
    from rwkvjax.serve.config import draft_tokens_of
    from rwkvjax.serve.generate import generate_ids, stream_text
    cfg = dataclass_from_args(GenerateConfig, args)
    refuse_slow_dtype(cfg.dtype)
    model = load(cfg.model, dtype=cfg.dtype)
    tok = model.tokenizer
    state = None
    if cfg.checkpoint:
        from rwkvjax.io.tuned_state import load_tuned_state
        state = load_tuned_state(cfg.checkpoint, model)
    memory = _memory(cfg, model.arch.vocab_size) if cfg.memory else None
    model = model.decoding()
    ids = generate_ids(model.params, model.arch, tok.encode(unescape(cfg.prompt)), max_tokens=cfg.max_tokens,
                       temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, state=state, memory=memory,
                       draft_tokens=draft_tokens_of(cfg))
    for piece in stream_text(ids, tok.decode_bytes):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def _memory(cfg, vocab_size: int):
    """The run's session memory with --checkpoint (an empty one when the run kept none), else an empty one."""
    from rwkvjax.errors import CheckpointMismatch
    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    if cfg.checkpoint:
        from rwkvjax.train.session_memory import checkpoint_memory
        mem = checkpoint_memory(cfg.checkpoint)
        if mem is not None:
            if mem.settings.vocab_size != vocab_size:
                raise CheckpointMismatch(f"--checkpoint {cfg.checkpoint}: its session memory is for a "
                                         f"{mem.settings.vocab_size}-id vocabulary, the model has {vocab_size}; "
                                         "use the model the run trained with, or --no-memory")
            return mem
    return SessionMemory(MemorySettings.for_vocab(vocab_size, cfg.memory_mb))
