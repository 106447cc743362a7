"""Library side of the CLI subcommands that need more than one call."""

from __future__ import annotations

import sys

import jax.numpy as jnp


def generate_command(a) -> None:
    from rwkvjax.generate import generate_ids, stream_text
    from rwkvjax.loaders import load
    from rwkvjax.tokenizer import for_vocab
    cfg, params = load(a.model, dtype=jnp.bfloat16 if a.dtype == "bf16" else jnp.float32)
    tok = for_vocab(cfg.vocab_size)
    ids = generate_ids(params, cfg, tok.encode(a.prompt), max_tokens=a.max_tokens, temperature=a.temperature,
                       top_p=a.top_p, seed=a.seed, state=getattr(a, "state", None))
    for piece in stream_text(ids, tok.decode_bytes):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
