"""Incremental detokenization of one reply: token ids in, text pieces out, ended by stop strings.

A token's bytes need not end on a character boundary (a byte vocabulary always splits multi-byte characters; a
World token can hold half of one), so the bytes go through one incremental UTF-8 decoder and a piece holds only
whole characters. Text that could be the start of a stop string is held back until the next token decides it:
a client never receives the first characters of a stop string that then completes. Both the server's engine
(per row) and `generate` (one stream) decode through `Detokenizer`.
"""

from __future__ import annotations

import codecs
from typing import Callable, Sequence


class Detokenizer:
    """`token_bytes(ids) -> bytes`: the tokenizer's `decode_bytes`; `stop`: strings that end the reply (not part
    of it). `push` each token, then `finish` once no more come; `stopped` says a stop string ended the text."""

    def __init__(self, token_bytes: Callable[[Sequence[int]], bytes], stop: Sequence[str] = ()):
        self._token_bytes = token_bytes
        self.stop = tuple(stop)
        # invalid bytes become U+FFFD rather than an error: a sampled token sequence need not be valid UTF-8
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""        # every character decoded so far
        self.emitted = 0      # characters of `text` handed out; no stop string starts before this point
        self.stopped = False

    def push(self, token: int) -> str:
        """Decode one more token: the text now safe to hand out (may be empty). Once a stop string appears,
        `stopped` is set and the piece is the text before it; later calls return nothing."""
        if self.stopped:
            return ""
        self.text += self._utf8.decode(self._token_bytes([token]))
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the reply: held-back text that no stop string completed, and a trailing incomplete UTF-8
        sequence (as U+FFFD); empty after a stop."""
        if self.stopped:
            return ""
        self.text += self._utf8.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        cut = self._stop_at()
        if cut >= 0:
            self.stopped = True
            end = cut
        else:
            end = len(self.text) if final else len(self.text) - self._held()
        piece = self.text[self.emitted:end]
        self.emitted = max(end, self.emitted)
        return piece

    def _stop_at(self) -> int:
        """Where the earliest stop string in the text starts, or -1. Held-back text guarantees that none starts
        before `emitted`."""
        found = [i for i in (self.text.find(s, self.emitted) for s in self.stop) if i >= 0]
        return min(found, default=-1)

    def _held(self) -> int:
        """Characters at the end of the unreleased text that are a proper prefix of some stop string."""
        room = len(self.text) - self.emitted
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, room), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest
