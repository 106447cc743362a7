"""Teacher-forced scoring of long token streams with the recurrent state carried across calls.

A stream is cut into calls whose lengths come from a fixed set of powers of two (greedy), so there is
no padding (the carried state stays exact) and at most log2(max_len)+1 shapes are ever compiled.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.merges.hypernet import SlotTables, UnitPositions
from rwkvjax.merges.units import MERGED
from rwkvjax.model.config import Architecture
from rwkvjax.model.rwkv7 import piece_lengths
from rwkvjax.model.state import State
from rwkvjax.model.wkv import WkvImpl
from rwkvjax.train.objective import nll_per_token


# The dispatcher's default: with nothing differentiated it runs the fastest forward
# (benchmarks/RESULTS.md, WKV kernels).


@functools.partial(jax.jit, static_argnames=("config",))
def _nll_plain(params, state: State, inputs_1T, targets_1T, *, config: Architecture):
    """One stream scored from every start state of the batch of `state`."""
    B = state.wkv.shape[1]
    inputs = jnp.broadcast_to(inputs_1T, (B,) + inputs_1T.shape[1:])
    return nll_per_token(params, inputs, jnp.broadcast_to(targets_1T, inputs.shape), state, config=config,
                         wkv_impl=WkvImpl.AUTO)


@functools.partial(jax.jit, static_argnames=("config",))
def _nll_units(params, hyper, state: State, inputs_1T, targets_1T, tables: SlotTables, pos: UnitPositions, *,
               config: Architecture):
    return nll_per_token(params, inputs_1T, targets_1T, state, config=config, units=MERGED, hyper=hyper,
                         tables=tables, pos=pos, wkv_impl=WkvImpl.AUTO)


def score_stream(params, config: Architecture, units: np.ndarray, state: State, *, prev_unit: int = 0,
                 max_len: int = 512, hyper=None, tables=None) -> tuple[np.ndarray, State]:
    """NLL in nats of every unit given the ones before it (the first given `prev_unit`), and the final state.

    The same units are scored from every start state in the batch of `state` (e.g. several tuned S0s
    at once): the result is [B, n], or [n] when B = 1. With `hyper`, `units` is one dynamic-tokenizer
    segment and `tables` its (slots [S,2], prior [S,2], avail_from [S]) from `Encoded`; `prev_unit` then
    belongs to the previous segment.
    """
    units = np.asarray(units, np.int32)
    inputs = np.concatenate([[prev_unit], units[:-1]]).astype(np.int32)
    if hyper is not None:
        tables = SlotTables.of(*tables)
    out, pos = [], 0
    for n in piece_lengths(len(units), max_len):
        x, y = jnp.asarray(inputs[None, pos:pos + n]), jnp.asarray(units[None, pos:pos + n])
        if hyper is None:
            nll, state = _nll_plain(params, state, x, y, config=config)
        else:
            upos = UnitPositions.of(x, first_in_segment=pos == 0, start=pos)
            nll, state = _nll_units(params, hyper, state, x, y, tables, upos, config=config)
        # a host copy: a view of the CPU device buffer would keep one buffer per piece alive for the whole
        # stream (measured: some 30 MB more peak RSS per 1M tokens with views)
        out.append(np.array(nll))
        pos += n
    B = state.wkv.shape[1]
    nll = np.concatenate(out, axis=1) if out else np.zeros((B, 0), np.float32)
    return (nll[0] if B == 1 else nll), state


def score_reset(params, config: Architecture, units: np.ndarray, state1: State, every: int, rows: int = 32) -> np.ndarray:
    """NLL in nats of every unit when the state returns to `state1` (batch 1) every `every` units.

    Chunk i is scored from `state1`, its first unit given the last unit of chunk i-1 (0 for the first), so
    only the recurrent memory is reset. Chunks run `rows` at a time as the rows of one call (the last call
    and the last chunk padded), so one shape is compiled.
    """
    units = np.asarray(units, np.int32)
    n = len(units)
    n_chunks = -(-n // every)
    total = -(-n_chunks // rows) * rows
    padded = np.zeros(total * every, np.int32)
    padded[:n] = units
    targets = padded.reshape(total, every)
    inputs = np.concatenate([[0], padded[:-1]]).reshape(total, every)
    state = jax.tree.map(lambda a: jnp.broadcast_to(a, (a.shape[0], rows) + a.shape[2:]), state1)
    out = []
    for i in range(0, total, rows):
        nll, _ = _nll_rows(params, jnp.asarray(inputs[i:i + rows]), jnp.asarray(targets[i:i + rows]), state,
                           config=config)
        out.append(np.array(nll))  # a host copy, not a view that keeps the device buffer (score_stream)
    return np.concatenate(out).reshape(-1)[:n]


_nll_rows = jax.jit(functools.partial(nll_per_token, wkv_impl=WkvImpl.AUTO), static_argnames=("config",))


def score_windows(params, config: Architecture, windows, state: State, *, hyper, max_len: int = 512):
    """Consecutive merged windows (one dyntok segment each) scored with the state and previous unit carried.

    Returns (NLL in nats per window, each [n_units], final State).
    """
    out, prev = [], 0
    for w in windows:
        nll, state = score_stream(params, config, w.units, state, prev_unit=prev, max_len=max_len, hyper=hyper,
                                  tables=(w.slots, w.prior_slots, w.avail_from))
        out.append(np.asarray(nll, np.float64))
        prev = int(w.units[-1])
    return out, state


def score_files(cfg, *, log=None) -> Iterator[tuple[str, int, float, float | None]]:
    """`score`: (file, bytes, bits per byte, the model's own bits per byte or None) of each UTF-8 file, then
    ('total', ...). Each file is read from the start state: zeros, or the tuned state of `cfg.checkpoint`
    (checked against this base model).

    With a session memory (`cfg.memory` None: the run's when `cfg.checkpoint` has one; True: the run's, else a new
    one; False: none), the bits are the mixture's: every byte scored before the memory learns it, one memory
    carried through the files in the order given (learning stays in this process; nothing is written)."""
    from pathlib import Path

    from rwkvjax.errors import DataError, MissingFile
    from rwkvjax.io.formats import load
    from rwkvjax.io.tuned_state import load_tuned_state
    from rwkvjax.memory.lm import mixture_bits
    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    model = load(cfg.model, dtype=cfg.dtype)
    config, params, tok = model.arch, model.params, model.tokenizer
    state = load_tuned_state(cfg.checkpoint, model) if cfg.checkpoint else model.initial_state(1)
    memory = None
    if cfg.checkpoint and cfg.memory is not False:
        from rwkvjax.train.session_memory import checkpoint_memory
        memory = checkpoint_memory(cfg.checkpoint)
        if memory is not None and log:
            log(f"session memory: the run's, from {cfg.checkpoint} ({memory.symbols_seen} symbols learned)")
        if memory is not None and memory.settings.vocab_size != config.vocab_size:
            raise DataError(f"{cfg.checkpoint}: its session memory is for {memory.settings.vocab_size} symbols, "
                            f"the model has {config.vocab_size}; pass the --model the run was trained with")
    if memory is None and cfg.memory:  # asked for, and no run's memory to start from
        memory = SessionMemory(MemorySettings.for_vocab(config.vocab_size, cfg.memory_mb))
        if log:
            log("session memory: a new one, learning the files in the order given")
    total_bits = total_model = total_bytes = 0.0
    for f in cfg.files:
        p = Path(f)
        if p.is_dir():
            raise DataError(f"{f}: is a folder; `score` takes text files")
        if not p.is_file():
            raise MissingFile(f"{f}: no such file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{f}: not UTF-8 text ({e})") from None
        ids = tok.encode(text)
        if not ids:
            yield f, 0, float("nan"), None
            continue
        nbytes = len(text.encode())
        if memory is None:
            nll, _ = score_stream(params, config, np.asarray(ids), state)
            bits, model_bits = float(nll.sum() / np.log(2)), None
        else:
            mix, own, _ = mixture_bits(params, config, np.asarray(ids), state, memory)
            bits, model_bits = float(mix.sum()), float(own.sum())
            total_model += model_bits
        total_bits += bits
        total_bytes += nbytes
        yield f, nbytes, bits / nbytes, None if model_bits is None else model_bits / nbytes
    if total_bytes:
        yield "total", int(total_bytes), total_bits / total_bytes, total_model / total_bytes if memory else None
