"""`cli.py generate`: stream sampled text from a model, optionally from a training run's tuned state."""

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
    from rwkvjax.io.convert import DTYPES, refuse_slow_dtype
    from rwkvjax.io.formats import load
    from rwkvjax.serve.generate import generate_ids, stream_text
    from rwkvjax.text.tokenizer import for_vocab
    cfg = dataclass_from_args(GenerateConfig, args)
    refuse_slow_dtype(cfg.dtype)
    config, params = load(cfg.model, dtype=DTYPES[cfg.dtype])
    tok = for_vocab(config.vocab_size)
    state = None
    if cfg.checkpoint:
        from rwkvjax.io.tuned_state import load_tuned_state
        state = load_tuned_state(cfg.checkpoint, config, params, dtype=cfg.dtype)
    from rwkvjax.model.params import unstack_layers
    ids = generate_ids(unstack_layers(params), config, tok.encode(unescape(cfg.prompt)), max_tokens=cfg.max_tokens,
                       temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, state=state)
    for piece in stream_text(ids, tok.decode_bytes):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
