"""RWKV World tokenizer: golden ids, parity with the official TRIE_TOKENIZER, round trips, clear errors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rwkvjax.text import world as world_tokenizer
from rwkvjax.text.tokenizer import for_vocab
from rwkvjax.text.world import VOCAB_FILE, VocabError, WorldTokenizer, _literal, parse_vocab

# Hard facts from the official tokenizer (the official `rwkv` package's rwkv_tokenizer.py).
GOLDEN = [
    ("\n\nUser: hi", [261, 24281, 59, 4571]),
    (" Paris", [37138]),
    ("The Eiffel tower is in the city of", [6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706]),
    ("Hello world! 你好, RWKV-7 Goose.\n\n",
     [33155, 40213, 34, 33, 10464, 11685, 45, 4171, 1184, 46, 56, 3851, 8415, 47, 261]),
    ("\n\n", [261]),
]

SETTINGS = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    return for_vocab(65536)


@pytest.fixture(scope="module")
def official():
    """The official pure-Python tokenizer, reading the vocab shipped inside the `rwkv` wheel (not our copy)."""
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    return TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"))


@pytest.fixture(scope="module")
def vocab_set() -> set[bytes]:
    return set(parse_vocab(VOCAB_FILE)[1:])


def _strings(obj, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)


def _claude_project_strings(root: Path) -> list[str]:
    """Every string in every JSONL line: text, thinking, tool inputs and outputs, metadata."""
    files = sorted(root.rglob("*.jsonl"))
    assert files, f"no .jsonl sessions under {root}"
    out: list[str] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                _strings(json.loads(line), out)
    return out


@pytest.mark.parametrize("text,ids", GOLDEN)
def test_golden(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_vocab_table_matches_official(tok, official):
    table = parse_vocab(VOCAB_FILE)
    assert len(table) == 65530 and table[0] == b""
    assert {i: table[i] for i in range(1, 65530)} == official.idx2token
    assert tok.token_bytes(65529) == b" " * 128 and tok.token_bytes(65527) == b"#" * 80
    assert [tok.token_bytes(b + 1) for b in range(256)] == [bytes([b]) for b in range(256)]


def test_literal_shortcut_equals_literal_eval():
    for line in VOCAB_FILE.read_text(encoding="utf-8").splitlines():
        src = line[line.index(" ") + 1:line.rindex(" ")]
        fast, slow = _literal(src), ast.literal_eval(src)
        assert type(fast) is type(slow) and fast == slow, line


def test_load_is_cached():
    assert WorldTokenizer()._root is WorldTokenizer()._root
    assert for_vocab(65536).vocab_size == 65536


def test_matches_official_on_claude_projects(tok, official, shared_data):
    texts = _claude_project_strings(shared_data / "claude-projects")
    assert sum(map(len, texts)) > 1_000_000
    for text in texts:
        ids = tok.encode(text)
        assert ids == official.encode(text), text[:200]
        assert tok.decode(ids) == text
    blob = "\n".join(texts[:3000])  # long input: tokens that straddle the joins
    assert tok.encode(blob) == official.encode(blob)


@SETTINGS
@given(st.text())
def test_text_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


@SETTINGS
@given(st.binary(max_size=300))
def test_bytes_round_trip_and_official(tok, official, raw):
    ids = tok.encode_bytes(raw)
    assert tok.decode_bytes(ids) == raw
    assert ids == official.encodeBytes(raw)


@SETTINGS
@given(st.lists(st.integers(1, 65529), max_size=120), st.binary(max_size=3))
def test_greedy_longest_prefix_on_token_soup(tok, official, vocab_set, ids, tail):
    """Concatenated vocab tokens make long overlapping candidates; check the rule itself and the official output."""
    raw = b"".join(tok.token_bytes(i) for i in ids) + tail
    got = tok.encode_bytes(raw)
    assert got == official.encodeBytes(raw)
    pos = 0
    for t in got:
        piece = tok.token_bytes(t)
        assert raw.startswith(piece, pos)
        longest = max(k for k in range(1, min(128, len(raw) - pos) + 1) if raw[pos:pos + k] in vocab_set)
        assert len(piece) == longest
        pos += len(piece)
    assert pos == len(raw)


def test_cut_table_never_splits_a_token(tok):
    cut = tok._cut_after
    assert 0 < cut.sum() < 65536
    for t in parse_vocab(VOCAB_FILE)[1:]:
        assert not any(cut[a << 8 | b] for a, b in zip(t, t[1:])), t


def test_chunk_memo_path_equals_plain_walk(tok, shared_data, monkeypatch):
    texts = _claude_project_strings(shared_data / "claude-projects")[:4000]
    blob = "\n".join(texts).encode("utf-8")
    assert len(blob) > 100 * world_tokenizer.MEMO_MIN_INPUT
    want = tok._walk(blob)
    tok._chunk_ids.clear()
    assert tok.encode_bytes(blob) == want  # cold memo
    assert len(tok._chunk_ids) > 100
    assert tok.encode_bytes(blob) == want  # warm memo
    monkeypatch.setattr(world_tokenizer, "MEMO_MAX_ENTRIES", 50)
    tok._chunk_ids.clear()
    assert tok.encode_bytes(blob) == want  # memo restarted many times on the way
    assert 0 < len(tok._chunk_ids) <= 50


def test_end_of_text_decodes_empty(tok):
    assert tok.token_bytes(0) == b""
    assert tok.decode([33155, 0, 0, 261]) == "Hello\n\n"
    assert tok.decode(np.array([[33155], [261]], dtype=np.int32)) == "Hello\n\n"


def test_invalid_utf8_decodes_with_replacement(tok):
    assert tok.decode([tok.encode_bytes(b"\xff")[0], 33155]) == "\ufffdHello"


@pytest.mark.parametrize("bad", [[65530], [65535], [70000], [-1], [261, -5], [1.5]])
def test_unknown_ids_raise(tok, bad):
    with pytest.raises(ValueError, match=r"not tokens of rwkv_vocab_v20230424.*0 = end-of-text"):
        tok.decode(bad)
    with pytest.raises(ValueError, match="not tokens"):
        tok.token_bytes(bad[-1])


def test_bad_inputs_raise(tok):
    with pytest.raises(TypeError, match="integers"):
        tok.decode(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="encode_bytes"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="use encode"):
        tok.encode_bytes("text")
    with pytest.raises(ValueError, match="no UTF-8 form"):
        tok.encode("lone \ud800 surrogate")


def _write_vocab(tmp_path: Path, edit) -> Path:
    lines = VOCAB_FILE.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda ls: ls[:300] + ["301 'abc' 4"] + ls[301:], r"vocab.txt:301: token 301 is 3 bytes but the line says 4"),
    (lambda ls: ls[:300] + ls[301:], r"vocab.txt:301: ids must run .* expected 301, got 302"),
    (lambda ls: ls[:300] + ["301 abc 3"] + ls[301:], r"vocab.txt:301: expected '<id> <python"),
    (lambda ls: ls[:-1], r"expected 65529 tokens .* found 65528"),
    (lambda ls: ls[:300] + ["301 'a' 1"] + ls[301:], r"appears under two ids"),
])
def test_corrupt_vocab_raises(tmp_path, edit, message):
    with pytest.raises(VocabError, match=message):
        parse_vocab(_write_vocab(tmp_path, edit))
