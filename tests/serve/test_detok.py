"""The incremental detokenizer: stop-string hold-back, stops at and across token boundaries, UTF-8 split across
tokens (byte vocabulary and World ids)."""

from __future__ import annotations

import numpy as np
import pytest

from rwkvjax.serve.detok import Detokenizer
from rwkvjax.text.tokenizer import ByteTokenizer, for_vocab

BYTES = ByteTokenizer().decode_bytes


def pieces(tokens, stop=(), token_bytes=BYTES):
    d = Detokenizer(token_bytes, stop)
    out = [d.push(t) for t in tokens]
    return out, d.finish(), d


def test_text_that_could_start_a_stop_is_held_back_until_decided():
    out, tail, d = pieces(b"Hi\nx", stop=("\n\n",))
    assert out == ["H", "i", "", "\nx"] and tail == "" and not d.stopped
    out, _, _ = pieces(b"abc", stop=("END",))
    assert out == ["a", "b", "c"]  # nothing here can start "END": nothing waits
    out, tail, d = pieces(b"xEN", stop=("END",))
    assert out == ["x", "", ""] and tail == "EN" and not d.stopped  # never completed: the reply's own text


def test_the_longest_possible_start_is_held_and_released_in_part():
    # "aab" with stop "aac": after "aa" both a's wait; "b" decides the first a is text
    out, _, _ = pieces(b"aab", stop=("aac", "ab!"))
    assert out == ["", "", "a"]  # "ab" may still become "ab!"


def test_stop_split_across_tokens_ends_the_reply_before_it():
    out, tail, d = pieces(b"ok\n\nmore", stop=("\n\n",))
    assert "".join(out) + tail == "ok" and d.stopped and tail == ""
    assert out[:4] == ["o", "k", "", ""] and out[4:] == ["", "", "", ""]


def test_stop_inside_one_token_and_at_its_boundary():
    vocab = {1: b"say", 2: b" END", 3: b"now", 4: b"ENDING"}
    tb = lambda ids: b"".join(vocab[i] for i in ids)
    out, tail, d = pieces([1, 2, 3], stop=("END",), token_bytes=tb)
    assert out == ["say", " ", ""] and d.stopped and tail == ""
    out, _, d = pieces([1, 4], stop=("END",), token_bytes=tb)
    assert out == ["say", ""] and d.stopped and d.text.endswith("ENDING")
    out, _, d = pieces([4], stop=("ING", "DIN"), token_bytes=tb)
    assert out == ["EN"] and d.stopped  # the earliest of the stops that appear


@pytest.mark.parametrize("text", ["é", "日本語", "a🙂b", "✓\n"])
def test_multibyte_characters_split_across_byte_tokens(text):
    out, tail, _ = pieces(text.encode("utf-8"))
    assert "".join(out) + tail == text and "\ufffd" not in "".join(out)
    assert all(len(p) <= 1 for p in out)  # a character appears once its last byte arrives, never in halves
    assert out[len(text.encode("utf-8")) - 1] == text[-1]


def test_multibyte_character_split_across_world_tokens():
    tok = for_vocab(65536)
    ids = tok.encode("🙂 done")
    assert [tok.decode_bytes([i]) for i in ids][:2] == [b"\xf0\x9f", b"\x99\x82"]  # the case under test
    out, tail, _ = pieces(ids, token_bytes=tok.decode_bytes)
    assert out[0] == "" and out[1] == "🙂" and "".join(out) + tail == "🙂 done"
    out, tail, d = pieces(ids, stop=("🙂",), token_bytes=tok.decode_bytes)
    assert not any(out) and d.stopped and tail == ""  # the stop is the whole first character


def test_an_incomplete_character_at_the_end_is_a_replacement_character():
    out, tail, _ = pieces(b"a\xe6\x97")
    assert out == ["a", "", ""] and tail == "\ufffd"
    out, tail, _ = pieces(b"a\xffb")  # not UTF-8 at all: replaced, the text goes on
    assert "".join(out) + tail == "a\ufffdb"


def test_nothing_after_a_stop():
    d = Detokenizer(BYTES, ("x",))
    assert d.push(ord("x")) == "" and d.stopped
    assert d.push(ord("y")) == "" and d.finish() == "" and d.emitted == 0


def _reference(text: str, stops) -> str:
    """One character arrives per byte token here: the reply ends at the first stop to complete."""
    for k in range(1, len(text) + 1):
        found = [i for i in (text[:k].find(s) for s in stops) if i >= 0]
        if found:
            return text[:min(found)]
    return text


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_match_the_text_cut_at_the_first_stop(seed):
    rng = np.random.default_rng(seed)
    alphabet = ["a", "b", "\n", "é", "日"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))
        stops = tuple("".join(rng.choice(alphabet, size=int(rng.integers(1, 4))))
                      for _ in range(int(rng.integers(0, 3))))
        d = Detokenizer(BYTES, stops)
        got = ""
        expect = _reference(text, stops)
        for b in text.encode("utf-8"):
            got += d.push(b)
            assert expect.startswith(got), (text, stops, got)  # nothing handed out is ever taken back
        got += d.finish()
        assert got == expect, (text, stops)
        assert d.stopped == any(s in text for s in stops)


def test_generate_streams_text_through_the_same_detokenizer():
    from rwkvjax.serve.generate import stream_text
    tok = for_vocab(65536)
    out = list(stream_text(iter(tok.encode("🙂 ok") + [tok.encode("é")[0]]), tok.decode_bytes))
    assert out == ["🙂", " ok", "é"]  # the emoji's two tokens make one piece
    assert list(stream_text(iter(b"a\xe6"), BYTES)) == ["a", "\ufffd"]  # a cut character ends the stream replaced
