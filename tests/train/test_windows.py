"""Window assembly: full merged windows, nothing dropped or repeated, tables that read every unit."""

from __future__ import annotations

import numpy as np

from ingest.events import UserText
from ingest.render import render_session
from rwkvjax.merges.dyntok import DynamicTokenizer, DynTokSettings, expand
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.data import Window, WindowAssembler, stream_windows

TOK = ByteTokenizer()
TEXT = "the cat and the hat sat on the mat; the rat ate the oat. " * 12


def _events(n):
    return [UserText(session="s1", parent=None, cwd="/w", uuid=f"u{i}", timestamp=None, seq=i, text=TEXT[i::3])
            for i in range(n)]


def test_merged_windows_are_full_and_cover_the_stream_exactly():
    ctx = 24
    dyn = DynamicTokenizer(DynTokSettings(v_base=256, window=64, threshold=2, n_slots=8), TOK.decode_bytes)
    asm = WindowAssembler(TOK, ctx, dyntok=dyn)
    evs = _events(3)
    wins = [w for ev in evs for w in asm.feed(ev)]
    assert wins and all(len(w.units) == ctx for w in wins), "a window is cut only when it can be filled"
    assert all(w.n_base > ctx for w in wins[2:]), "merges let a window cover more base tokens than units"
    wins += asm.flush()
    assert not asm.pending
    base = [t for w in wins for t in expand(w.units, w.slots, 256)]
    expected = TOK.encode("\n\n".join(render_session([ev]).text for ev in evs))
    assert base == expected
    assert sum(w.nbytes for w in wins) == len(TOK.decode_bytes(expected))
    for w in wins:  # JSON round trip (replay buffer / checkpoint)
        r = Window.from_dict(w.to_dict())
        assert np.array_equal(r.units, w.units) and np.array_equal(r.prior_slots, w.prior_slots)


def test_stream_windows_without_merges_are_plain_slices():
    toks = TOK.encode(TEXT)
    wins = stream_windows("s", toks, 100, TOK)
    assert [len(w.units) for w in wins] == [100] * (len(toks) // 100) + ([len(toks) % 100] if len(toks) % 100 else [])
    assert np.concatenate([w.units for w in wins]).tolist() == toks
    assert all(w.slots is None and w.prior_slots is None for w in wins)


def test_window_tables_must_come_together():
    import pytest
    with pytest.raises(ValueError, match="come together"):
        Window("s", np.zeros(3, np.int32), 3, 3, slots=np.zeros((2, 2), np.int32))
