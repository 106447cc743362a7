"""Bits per byte of fixed texts under a trainable start state: what periodic evaluation (and an update
gate) measures between steps. Each text is cut into its first windows of `ctx_len` base tokens, every
window scored from the start state, as training windows are (plain vocabulary, no merges)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rwkvjax.errors import DataError, MissingFile
from rwkvjax.merges.units import PLAIN
from rwkvjax.train.data import make_batch, stream_windows
from rwkvjax.train.step import make_eval_fn


class TextProbe:
    def __init__(self, config, params, tok, texts: dict[str, str], *, ctx_len: int, max_windows: int = 4,
                 wkv_impl="auto"):
        if not texts:
            raise DataError("probe: no texts to score")
        self.params, self.names = params, list(texts)
        wins = {n: stream_windows(n, tok.encode(t), ctx_len, tok)[:max_windows] for n, t in texts.items()}
        empty = [n for n, w in wins.items() if not w]
        if empty:
            raise DataError(f"probe: text(s) {empty} are empty")
        flat = [w for n in self.names for w in wins[n]]
        self.owner = np.asarray([self.names.index(w.session) for w in flat])
        self.nbytes = np.asarray([w.nbytes for w in flat], np.float64)
        self.batch = make_batch(flat, [1.0] * len(flat), batch_size=len(flat), ctx_len=ctx_len)
        self.units = np.asarray(self.batch.mask).sum(axis=1)
        self.eval_fn = make_eval_fn(config, units=PLAIN, wkv_impl=wkv_impl)

    def __call__(self, trainable) -> dict[str, float]:
        _, m = self.eval_fn(trainable, self.params, self.batch)
        return self.per_text(m["window_nll"])

    def per_text(self, window_nll) -> dict[str, float]:
        """Bits per byte of each text from the per-window NLL of `self.batch` (however it was computed)."""
        bits = np.asarray(window_nll, np.float64) * self.units / math.log(2)
        return {n: float(bits[self.owner == i].sum() / self.nbytes[self.owner == i].sum())
                for i, n in enumerate(self.names)}


def read_texts(paths: Sequence[str]) -> dict[str, str]:
    """{file name: text} of UTF-8 files; errors name the file."""
    out = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise MissingFile(f"{p}: no such text file")
        try:
            out[p.name] = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e})") from None
    return out


def default_canaries() -> list[str]:
    """General code and prose that is on every machine with Python and absent from coding-agent traces."""
    import sysconfig
    std = Path(sysconfig.get_paths()["stdlib"])
    return [str(p) for p in (std / "textwrap.py", std / "LICENSE.txt") if p.is_file()]
