"""RWKV World tokenizer (`rwkv_vocab_v20230424`): greedy longest-prefix match over UTF-8 bytes.

Token ids 1..65529 come from the vocab file; id 0 is end-of-text / document separator and decodes to
b"" (it has no bytes, so a decoded stream with separators reads as the plain concatenated documents).
Ids 65530..65535 are spare model rows, not tokens: decoding them raises ValueError.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from rwkvjax.errors import VocabError

VOCAB_FILE = Path(__file__).resolve().parents[1] / "data" / "rwkv_vocab_v20230424.txt"
N_TOKENS = 65529  # ids 1..N_TOKENS in the file
MEMO_MIN_INPUT = 256  # shorter inputs: the numpy split costs more than it saves
MEMO_MAX_CHUNK = 64  # bytes; longer chunks are rarely repeated
MEMO_MAX_ENTRIES = 1 << 17  # then start over (~25 MB at most)


class _Vocab(NamedTuple):
    id_to_bytes: tuple[bytes, ...]  # index = id; [0] = b"" (end-of-text)
    root: dict  # trie: byte -> [token id or 0 if the prefix is no token, child dict or None]
    # cut_after[a << 8 | b]: no token contains bytes a, b next to each other, so no token can span
    # that spot and every greedy parse has a token boundary between them.
    cut_after: np.ndarray  # bool [65536]
    chunk_ids: dict  # memo: chunk between such boundaries -> its ids (shared, bounded)


def _literal(src: str) -> str | bytes:
    """ast.literal_eval, short-cut for plain quoted text (most lines): without backslashes or inner quotes
    the value is exactly the text between the quotes, and skipping the parser makes loading ~4x faster."""
    q = src[:1]
    if (q == "'" or q == '"') and len(src) >= 2 and src[-1] == q and "\\" not in src and q not in src[1:-1]:
        return src[1:-1]
    return ast.literal_eval(src)


def parse_vocab(path: Path) -> tuple[bytes, ...]:
    """Read `<id> <python literal> <byte length>` lines into a table indexed by id (entry 0 = b"")."""
    table: list[bytes] = [b""]
    with open(path, encoding="utf-8") as f:  # text mode also folds CRLF copies of the file
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                first, last = line.index(" "), line.rstrip().rindex(" ")
                tid, literal, length = int(line[:first]), _literal(line[first + 1:last]), int(line[last + 1:])
            except (ValueError, SyntaxError) as e:
                raise VocabError(f"{where}: expected '<id> <python str/bytes literal> <byte length>', "
                                 f"got {line[:80]!r} ({e})") from None
            tok = literal.encode("utf-8") if isinstance(literal, str) else literal
            if not isinstance(tok, bytes) or not tok:
                raise VocabError(f"{where}: token literal must be a non-empty str or bytes, got {literal!r}")
            if tid != len(table):
                raise VocabError(f"{where}: ids must run 1, 2, 3, ... in order; expected {len(table)}, got {tid}")
            if len(tok) != length:
                raise VocabError(f"{where}: token {tid} is {len(tok)} bytes but the line says {length}")
            table.append(tok)
    if len(table) - 1 != N_TOKENS:
        raise VocabError(f"{path}: expected {N_TOKENS} tokens (rwkv_vocab_v20230424), found {len(table) - 1}")
    # Every byte must be a token (ids 1..256) so that any input is encodable.
    if any(table[b + 1] != bytes([b]) for b in range(256)):
        raise VocabError(f"{path}: ids 1..256 must be the single bytes 0x00..0xff in order")
    if len(set(table)) != len(table):
        raise VocabError(f"{path}: some byte string appears under two ids")
    return tuple(table)


def _cut_table(table: Sequence[bytes]) -> np.ndarray:
    tokens = [t for t in table if t]
    joined = np.frombuffer(b"".join(tokens), np.uint8).astype(np.int64)
    pairs = (joined[:-1] << 8) | joined[1:]  # pairs[k] = bytes k, k+1 of the join
    straddles = np.cumsum([len(t) for t in tokens])[:-1] - 1  # pairs across two tokens are not inner pairs
    is_inner = np.ones(len(pairs), bool)
    is_inner[straddles] = False
    cut = np.ones(65536, bool)
    cut[pairs[is_inner]] = False
    return cut


def _build_trie(table: Sequence[bytes]) -> dict:
    root: dict = {}
    for tid in range(1, len(table)):
        tok = table[tid]
        node = root
        for c in tok[:-1]:
            entry = node.get(c)
            if entry is None:
                entry = node[c] = [0, None]
            if entry[1] is None:
                entry[1] = {}
            node = entry[1]
        entry = node.get(tok[-1])
        if entry is None:
            node[tok[-1]] = [tid, None]
        else:
            entry[0] = tid
    return root


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> _Vocab:
    table = parse_vocab(path)
    return _Vocab(table, _build_trie(table), _cut_table(table), {})


class WorldTokenizer:
    """RWKV World vocab (65536 model rows); matches `rwkv.rwkv_tokenizer.TRIE_TOKENIZER` token for token."""

    vocab_size = 65536

    def __init__(self, vocab_path: str | Path = VOCAB_FILE):
        vocab = _load(Path(vocab_path).resolve())
        self._id_to_bytes = vocab.id_to_bytes
        self._root = vocab.root
        self._cut_after = vocab.cut_after
        self._chunk_ids = vocab.chunk_ids

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"WorldTokenizer.encode takes str, got {type(text).__name__} (use encode_bytes for bytes)")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"WorldTokenizer.encode: text has no UTF-8 form ({e}); "
                             "remove lone surrogates or pass bytes to encode_bytes") from None
        return self.encode_bytes(raw)

    def encode_bytes(self, b: bytes) -> list[int]:
        if isinstance(b, str):
            raise TypeError("WorldTokenizer.encode_bytes takes bytes, got str (use encode)")
        src = bytes(b)
        if len(src) < MEMO_MIN_INPUT:
            return self._walk(src)
        # Split at guaranteed token boundaries (vectorised), then reuse the ids of chunks seen before:
        # code and prose repeat short chunks, and a dict hit is cheaper than walking the trie.
        a = np.frombuffer(src, np.uint8).astype(np.uint16)
        cuts = (np.flatnonzero(self._cut_after[(a[:-1] << 8) | a[1:]]) + 1).tolist()
        cuts.append(len(src))
        memo, walk, max_entries = self._chunk_ids, self._walk, MEMO_MAX_ENTRIES
        get = memo.get
        out: list[int] = []
        extend = out.extend
        start = 0
        for end in cuts:
            chunk = src[start:end]
            ids = get(chunk)
            if ids is None:
                ids = walk(chunk)
                if end - start <= MEMO_MAX_CHUNK:
                    if len(memo) >= max_entries:
                        memo.clear()
                    memo[chunk] = ids
            extend(ids)
            start = end
        return out

    def _walk(self, src: bytes) -> list[int]:
        root = self._root
        out: list[int] = []
        append = out.append
        i, n = 0, len(src)
        # Walk the trie from each token start, remembering the last node that ends a token;
        # a hot loop over plain dicts/lists is the fastest pure-Python form measured (benchmarks/tokenizer.py).
        while i < n:
            best, node = root[src[i]]  # every byte is a token, so this never misses
            best_end = j = i + 1
            while node is not None and j < n:
                entry = node.get(src[j])
                if entry is None:
                    break
                j += 1
                tid, node = entry
                if tid:
                    best, best_end = tid, j
            append(best)
            i = best_end
        return out

    def token_bytes(self, token_id: int) -> bytes:
        return self.decode_bytes([token_id])

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        if hasattr(ids, "__array__"):  # numpy / jax arrays: check dtype, then plain ints
            arr = np.asarray(ids)
            if arr.dtype.kind not in "iu":
                raise TypeError(f"WorldTokenizer.decode: token ids must be integers, got dtype {arr.dtype}")
            ids = arr.reshape(-1).tolist()
        ids = list(ids)
        table = self._id_to_bytes
        try:
            if ids and (min(ids) < 0 or max(ids) >= len(table)):
                raise IndexError
            return b"".join(map(table.__getitem__, ids))
        except (IndexError, TypeError):
            bad = [i for i in ids if not (isinstance(i, (int, np.integer)) and 0 <= i < len(table))]
            raise ValueError(f"WorldTokenizer.decode: ids {bad[:5]} are not tokens of rwkv_vocab_v20230424 "
                             f"(valid: 0 = end-of-text, 1..{len(table) - 1}; model rows "
                             f"{len(table)}..{self.vocab_size - 1} are unused padding)") from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
