"""Pretraining segments: contiguous text, copies of real text, copies of noise (rwkvjax/train/pretrain.py)."""
import numpy as np
import pytest

from rwkvjax.errors import ConfigError
from rwkvjax.train.config import PretrainConfig
from rwkvjax.train.pretrain import segment_batch

# random bytes: a 16-byte window of it occurs in the stream once, so where a row's bytes came from is decidable
STREAM = np.random.default_rng(0).integers(0, 256, 200_000).astype(np.int32)


def _in_stream(piece: np.ndarray) -> bool:
    hits = np.flatnonzero(STREAM[:-piece.size] == piece[0])
    return any(np.array_equal(STREAM[i:i + piece.size], piece) for i in hits)


def _repeats_later(row: np.ndarray, n: int = 16) -> bool:
    head = row[:n]
    return any(np.array_equal(row[i:i + n], head) for i in range(n, row.size - n + 1))


@pytest.mark.parametrize("copy_prob,copy_noise", [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)])
def test_segments_hold_text_copies_or_noise_copies(copy_prob, copy_noise):
    rows = segment_batch(STREAM, np.random.default_rng(1), 12, 1024, copy_prob, copy_noise)
    assert rows.shape == (12, 1025) and rows.dtype == np.int32
    for row in rows:
        if copy_prob == 0:
            assert _in_stream(row)            # one contiguous piece of text
            assert not _repeats_later(row)
        else:
            assert _repeats_later(row)        # the chunk comes back
            # a text chunk is a piece of the stream; a noise chunk is not (its bytes are drawn one by one)
            assert _in_stream(row[:16]) == (copy_noise == 0)
            assert np.isin(row[:16], STREAM).all()


def test_copy_noise_is_a_probability():
    with pytest.raises(ConfigError, match="--copy-noise 1.5"):
        PretrainConfig(out="x", copy_noise=1.5)
    with pytest.raises(ConfigError, match="--copy-noise -0.1"):
        PretrainConfig(out="x", copy_noise=-0.1)
