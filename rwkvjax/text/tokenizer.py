"""Tokenizers, chosen from the loaded model's vocabulary size (never from a user flag)."""

from __future__ import annotations

from typing import Protocol, Sequence

from rwkvjax.errors import CheckpointError


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...


class ByteTokenizer:
    """Raw UTF-8 bytes: token id = byte value (rwkv.cpp tiny model, the project's byte-level models)."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"byte tokenizer: ids {bad[:5]} are outside 0..255")
        return bytes(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def for_vocab(vocab_size: int) -> Tokenizer:
    """Byte vocab for 256-row models, RWKV World vocab for 65536-row models."""
    if vocab_size == 256:
        return ByteTokenizer()
    if vocab_size == 65536:
        from rwkvjax.text.world import WorldTokenizer
        return WorldTokenizer()
    raise CheckpointError(_no_tokenizer(vocab_size))


def _no_tokenizer(vocab_size: int) -> str:
    return (f"no tokenizer for a model with {vocab_size} embedding rows (supported: 256 = bytes, 65536 = RWKV "
            "World); such a model runs on token ids only")


class NoTokenizer:
    """What a model with another vocabulary size carries (test shapes, custom vocabularies): it loads and runs
    on token ids; any use of text says why there is no tokenizer instead of failing later."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def _refuse(self, *_):
        raise CheckpointError(_no_tokenizer(self.vocab_size))

    encode = decode = decode_bytes = _refuse


def for_model(vocab_size: int) -> Tokenizer:
    """The tokenizer a loaded model carries: `for_vocab`'s, or a `NoTokenizer` for another vocabulary size."""
    return for_vocab(vocab_size) if vocab_size in (256, 65536) else NoTokenizer(vocab_size)


def tokenizer_id(tok: Tokenizer) -> str:
    """A short name that changes when the token ids would: recorded with every named state."""
    if isinstance(tok, ByteTokenizer):
        return "bytes-256"
    if isinstance(tok, NoTokenizer):
        tok._refuse()
    import hashlib

    from rwkvjax.text.world import VOCAB_FILE
    return "world-" + hashlib.sha256(VOCAB_FILE.read_bytes()).hexdigest()[:12]
