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
    state = None
    if a.checkpoint:
        from rwkvjax.checkpoint import load_tuned_state
        state = load_tuned_state(a.checkpoint, cfg)
    ids = generate_ids(params, cfg, tok.encode(a.prompt), max_tokens=a.max_tokens, temperature=a.temperature,
                       top_p=a.top_p, seed=a.seed, state=state)
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


def score_command(a) -> None:
    import numpy as np

    from rwkvjax.checkpoint import load_tuned_state
    from rwkvjax.loaders import load
    from rwkvjax.scoring import score_stream
    from rwkvjax.state import zero_state
    from rwkvjax.tokenizer import for_vocab
    cfg, params = load(a.model)
    tok = for_vocab(cfg.vocab_size)
    state = load_tuned_state(a.checkpoint, cfg) if a.checkpoint else zero_state(cfg, 1)
    total_bits = total_bytes = 0.0
    for f in a.files:
        text = open(f, encoding="utf-8").read()
        ids = tok.encode(text)
        if not ids:
            print(f"{f}\tempty")
            continue
        nll, _ = score_stream(params, cfg, np.asarray(ids), state)
        bits, nbytes = float(nll.sum() / np.log(2)), len(text.encode())
        total_bits += bits
        total_bytes += nbytes
        print(f"{f}\t{nbytes} bytes\t{bits / nbytes:.4f} bits/byte")
    if total_bytes:
        print(f"total\t{int(total_bytes)} bytes\t{total_bits / total_bytes:.4f} bits/byte")


def eval_command(a) -> None:
    import shlex

    from rwkvjax.cli_args import dataclass_from_args
    from rwkvjax.eval_report import write_eval_report
    from rwkvjax.evaluate import EvalConfig, run_eval
    from rwkvjax.loaders import load
    cfg = dataclass_from_args(EvalConfig, a, arms=tuple(a.arms), canaries=tuple(a.canaries or default_canaries()))
    res = run_eval(cfg, load(a.model), log=lambda m: print(m, file=sys.stderr, flush=True))
    cmd = "python cli.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    print(write_eval_report(res, cfg.out, cmd))


def default_canaries() -> list[str]:
    """General code and prose that is on every machine of this kind and absent from coding-agent traces."""
    import sysconfig
    from pathlib import Path
    std = Path(sysconfig.get_paths()["stdlib"])
    return [str(p) for p in (std / "textwrap.py", std / "LICENSE.txt") if p.is_file()]


def hypernet_command(a) -> None:
    import json

    from rwkvjax.cli_args import dataclass_from_args
    from rwkvjax.hyper_train import HyperTrainConfig, run_hyper_train
    from rwkvjax.loaders import load
    cfg = dataclass_from_args(HyperTrainConfig, a, corpus=tuple(a.corpus))
    res = run_hyper_train(cfg, load(a.model), log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=1, ensure_ascii=False))
