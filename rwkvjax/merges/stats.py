"""Token and merge counts of training text, for `cli.py traces --stats --model`: tokens per role and what
the default dynamic merges would do to the same stream."""

from __future__ import annotations

from collections import Counter

from rwkvjax.merges.dyntok import for_tokenizer


class TokenStats:
    """The `token_stats` hook of `ingest.traces.traces_command` (it sees text and roles, nothing else)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.dyntok = for_tokenizer(tokenizer)
        self.by_role: Counter = Counter()

    def add_span(self, role: str, text: str) -> None:
        self.by_role[role] += len(self.tok.encode(text))

    def add_text(self, text: str) -> None:
        """One event's whole rendered text, in stream order (for the merges)."""
        self.dyntok.encode(self.tok.encode(text))

    def report(self) -> dict:
        st = self.dyntok.stats(top=10)
        return {"tokens_by_role": dict(self.by_role),
                "merges": {"base_tokens": st["base_tokens"], "recurrent_steps": st["recurrent_steps"],
                           "steps_per_base_token": st["steps_per_base_token"],
                           "fewer_steps": 1 - st["steps_per_base_token"], "promotions": st["promotions"],
                           "evictions": st["evictions"], "top_merges": st["top_merges"]}}
