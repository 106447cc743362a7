"""The library's task-level functions on a `Model` (what `rwkvjax.load` returns), re-exported by the package
face: score text, generate text, start from a named tuned state. Each is a thin composition of the part that
does the work (`eval.scoring`, `serve.generate`, `io.states`), so it sits above them all, below the CLI.

    model = rwkvjax.load("model.safetensors")
    rwkvjax.score(model, "some text")                      # bits per byte
    rwkvjax.generate(model, "prompt", max_tokens=64, temperature=0)
    tuned = rwkvjax.use_state(model, "myproject", "runs/states")
"""

from __future__ import annotations

import os

import numpy as np

from rwkvjax.errors import ConfigError
from rwkvjax.model.state import State
from rwkvjax.model.value import Model

LN2 = float(np.log(2.0))


def score(model: Model, text: str, *, state: State | None = None) -> float:
    """Bits per byte of `text` (UTF-8) read from `state` (default: the model's start state), every token
    scored given the ones before it; the first token is given token 0, as `cli.py score` reads a file."""
    from rwkvjax.eval.scoring import score_stream
    ids = model.tokenizer.encode(text)
    if not ids:
        raise ConfigError("score: the text is empty")
    nll, _ = score_stream(model.params, model.arch, np.asarray(ids, np.int32),
                          model.initial_state(1) if state is None else state)
    return float(np.sum(nll) / LN2 / len(text.encode("utf-8")))


def generate(model: Model, prompt: str, *, max_tokens: int = 100, temperature: float = 1.0, top_p: float = 0.85,
             top_k: int = 0, seed: int = 0, state: State | None = None, stop: str | None = None) -> str:
    """Sample a continuation of `prompt` (RWKV sampling: temperature, then top-k, then top-p; 0 is greedy) from
    `state` (default: the model's start state), up to `max_tokens` tokens or the first `stop` string (not
    included). Decodes on the model's decoding layout (`Model.decode_params`)."""
    from rwkvjax.serve.generate import generate_ids, stream_text
    ids = generate_ids(model.decode_params, model.arch, model.tokenizer.encode(prompt), max_tokens=max_tokens,
                       temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                       state=model.initial_state(1) if state is None else state)
    out = ""
    for piece in stream_text(ids, model.tokenizer.decode_bytes):
        out += piece
        if stop and stop in out:
            return out[:out.index(stop)]
    return out


def use_state(model: Model, name: str, states: str | os.PathLike) -> Model:
    """`model` starting from the named state in the state store `states` (what `train` publishes and `cli.py
    state` lists); refused when the state was tuned for another base model or tokenizer."""
    from rwkvjax.io.states import StateStore
    _, arrays = StateStore(states, create=False).load(name, base_hash=model.hash, tokenizer=model.tokenizer_id)
    return model.with_start(arrays["wkv"], att_shift_LC=arrays.get("att_shift"), ffn_shift_LC=arrays.get("ffn_shift"))
