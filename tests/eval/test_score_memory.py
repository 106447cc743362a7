"""`score --memory`: the mixture of the model and a session memory built from the files in order, every byte scored
before the memory learns it; without it, `score` is the model alone as before."""

from __future__ import annotations

import numpy as np
import pytest

from rwkvjax.eval.config import ScoreConfig
from rwkvjax.eval.scoring import score_files, score_stream
from rwkvjax.io.formats import load
from rwkvjax.memory.lm import mixture_bits
from rwkvjax.memory.memory import MemorySettings, SessionMemory
from rwkvjax.model.state import zero_state
from rwkvjax.train.run import DEMO_MODEL
from tests.conftest import REPO


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    text = (REPO / "rwkvjax" / "eval" / "compressors.py").read_text()
    a, b = d / "a.py", d / "b.py"
    a.write_text(text)
    b.write_text(text.replace("prime", "history"))  # a near copy: what a user's sessions are full of
    return a, b


def test_score_with_a_memory_learns_from_the_earlier_files(files):
    a, b = files
    rows = list(score_files(ScoreConfig(files=(str(a), str(b)), model=str(DEMO_MODEL), memory=True)))
    (_, na, mix_a, own_a), (_, nb, mix_b, own_b), (total, n, mix, own) = rows
    assert total == "total" and n == na + nb
    assert mix_b < 0.25 * own_b  # the second file is nearly free once the first is in the memory
    assert mix_a < own_a  # and a file repeats itself already
    assert mix == pytest.approx((mix_a * na + mix_b * nb) / n)
    # the same figures as the library's mixture, one memory through both files
    loaded = load(DEMO_MODEL)
    config, params = loaded.arch, loaded.params
    mem = SessionMemory(MemorySettings.for_vocab(256))
    bits = [mixture_bits(params, config, np.frombuffer(p.read_bytes(), np.uint8), zero_state(config, 1), mem)[0]
            for p in (a, b)]
    assert mix_a == pytest.approx(bits[0].sum() / na, rel=1e-9)
    assert mix_b == pytest.approx(bits[1].sum() / nb, rel=1e-9)


def test_score_without_a_memory_is_the_model_alone(files):
    a, _ = files
    [(_, n, bpb, own), _total] = list(score_files(ScoreConfig(files=(str(a),), model=str(DEMO_MODEL))))
    assert own is None
    loaded = load(DEMO_MODEL)
    config, params = loaded.arch, loaded.params
    nll, _ = score_stream(params, config, np.frombuffer(a.read_bytes(), np.uint8), zero_state(config, 1))
    assert bpb == pytest.approx(float(nll.sum() / np.log(2)) / n, rel=1e-6)
