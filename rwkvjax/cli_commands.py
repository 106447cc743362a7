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


def train_command(a) -> None:
    import json

    from rwkvjax.cli_args import dataclass_from_args
    from rwkvjax.trainer import TrainConfig, Trainer, demo_setup
    model = None
    if a.demo:
        cfg, model = demo_setup(a.ckpt_dir or "runs/demo", a)
    else:
        if not a.ckpt_dir:
            raise ValueError("train: --ckpt-dir is required (or use --demo)")
        cfg = dataclass_from_args(TrainConfig, a, ckpt_dir=a.ckpt_dir, source=tuple(a.source),
                                  steps=None if a.forever else a.steps)
    print(json.dumps(Trainer(cfg, model=model).run()))


def inspect_command(a) -> None:
    import json

    from rwkvjax.report import format_inspect, inspect, plot
    rep = inspect(a.checkpoint, last=a.last)
    if a.plot:
        rep["plot"] = plot(a.checkpoint, a.plot)
    print(json.dumps(rep, indent=1, ensure_ascii=False) if a.json else format_inspect(rep))
