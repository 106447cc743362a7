"""Sampling from the session memory's mixture, one request at a time, on the host; speculative decoding from it.

Every step of a request with a memory: the model's next-token probabilities (from the device) -> the mixture
p_mix = memory.distribution(p_model) -> log p_mix taken as the logits of the request's sampler (penalties,
top-p, top-k, temperature as `serve.sampling` applies them) -> a token -> the memory learns it after the
model's opinion (`learn`). The prompt was absorbed first, so the reply can copy from it.

Speculative decoding: the memory's match models propose the next tokens (`SessionMemory.draft`), one chunked
forward of the tokens not yet in the state followed by the drafts gives the model's probabilities after each,
and each draft is accepted or replaced by the rule of `sampling.verify_draft`, position by position, the
memory having learned every token accepted before it, so the text has exactly the distribution of plain
sampling (and greedy text is plain greedy text). Whether to verify is decided per step from an estimate of
how often drafts are accepted and the measured costs of the calls (`Costs`).

After a rejection the recurrent state must be the one after the accepted tokens. The state before the
chunk is kept and the accepted tokens are fed again: folded into the next verification when there is one
(a chunk of K + 1 tokens costs little more than a shorter one on this CPU), else prefilled before the next
plain step (`RECOVER`; benchmarks/speculative.py measures both ways against re-running them at once).
"""

from __future__ import annotations

import collections
import hashlib
import time
from typing import Callable

import numpy as np

from rwkvjax.memory.memory import SessionMemory
from rwkvjax.serve.sampling import RowSampler, inverse_cdf, verify_draft

# Acceptance estimate: starts at an even chance and follows the recent drafts (each observation weighs 1/5,
# so about the last five drafts count): a prompt that stops copying stops speculating within a few tokens.
PRIOR_ACCEPT = 0.5
ACCEPT_WEIGHT = 0.2
# Recovery after a rejection: "refeed" keeps the state before the chunk and feeds the accepted tokens again with
# the next call; "rerun" prefills them at once (benchmarks/speculative.py compares the two).
RECOVER = ("refeed", "rerun")


class Costs:
    """Measured seconds of the calls a request can make: `step` (one plain decode step, per row), `verify` (one
    chunked forward of K + 1 tokens), `refeed` (prefilling accepted tokens again). Each is the least of its last
    `window` measurements: the first calls after a compile run slower for a while, and on a shared machine the
    least time is the call's own cost, the rest is other work. Until a kind is measured it is taken as a multiple
    of the step (the ratios measured on this CPU, demo model: benchmarks/speculative.py), so the first decisions
    are sensible and every later one uses this machine's figures."""

    PRIOR = {"step": 1.0, "verify": 2.2, "refeed": 1.7}

    def __init__(self, window: int = 32):
        self.window = window
        self._seen: dict[str, collections.deque] = {}

    def record(self, kind: str, seconds: float) -> None:
        self._seen.setdefault(kind, collections.deque(maxlen=self.window)).append(seconds)

    @property
    def seconds(self) -> dict[str, float]:
        return {k: min(v) for k, v in self._seen.items()}

    def get(self, kind: str) -> float:
        """`kind`'s cost; kinds "step@B" (the engine's step at batch size B, per row) fall back to "step"."""
        if kind in self._seen:
            return min(self._seen[kind])
        step = min(self._seen["step"]) if "step" in self._seen else 1e-3
        return step * self.PRIOR[kind.split("@")[0]] / self.PRIOR["step"]


class Timer:
    """`with timer("verify", costs, shape):` records the block's seconds unless it is the first call of `shape`
    (the one that compiled it)."""

    def __init__(self):
        self.shapes: set = set()

    def __call__(self, kind: str, costs: Costs, shape, scale: float = 1.0):
        return _Timed(self, kind, costs, shape, scale)


class _Timed:
    def __init__(self, timer: Timer, kind: str, costs: Costs, shape, scale: float):
        self.timer, self.kind, self.costs, self.shape, self.scale = timer, kind, costs, shape, scale

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        if exc[0] is None:
            if self.shape in self.timer.shapes:
                self.costs.record(self.kind, (time.perf_counter() - self.t0) * self.scale)
            self.timer.shapes.add(self.shape)


class MemoryDecoder:
    """The host side of one request that samples from the mixture: its scratch memory, its sampler, its drafts
    and how often they are accepted."""

    def __init__(self, memory: SessionMemory, sampler: RowSampler, draft_tokens: int = 0):
        self.memory, self.sampler, self.draft_tokens = memory, sampler, draft_tokens
        self.accept = PRIOR_ACCEPT
        self.drafted = self.accepted = self.verifications = 0
        self.learned: list[int] = []  # every token the memory learned, in order

    def drafts(self) -> list[int]:
        """Up to K tokens the memory's longest match expects next. A match that reaches the present (its
        continuation is shorter than K) is a text repeating itself with that period: the drafts go on repeating
        it, as an overlapping copy does (LZ77's), rather than leave the verification's room unused."""
        if self.draft_tokens <= 0:
            return []
        d = self.memory.draft(self.draft_tokens)
        if 0 < len(d) < self.draft_tokens:
            d = [d[i % len(d)] for i in range(self.draft_tokens)]
        return d

    # ----- the decision -----
    def speculate(self, n_feed: int, drafts: list[int], costs: Costs, step: str = "step") -> int:
        """How many drafts to verify now (0: a plain step). A verification is one forward of exactly K + 1
        tokens (one compiled shape): the `n_feed` tokens not yet in the state, the drafts, and padding when there
        are fewer drafts than room (`chunk`). It pays when the tokens it is expected to yield per second beat
        plain steps (which first prefill the unfed tokens when there are several): the yield is 1 + a + ... + a^d
        for acceptance rate a; a padded chunk whose drafts all pass leaves its tokens to be fed again (the
        state after the padding is not the one wanted), which costs a refeed. `step`: the kind of cost a
        plain step of this row has (the engine's depends on its batch size)."""
        d = min(self.draft_tokens + 1 - n_feed, len(drafts))
        if self.draft_tokens <= 0 or d < 1:
            return 0
        a = min(self.accept, 1 - 1e-9)
        gain = (1 - a ** (d + 1)) / (1 - a)
        cost = costs.get("verify") + (a ** d * costs.get("refeed") if n_feed + d < self.draft_tokens + 1 else 0.0)
        plain = costs.get(step) + (costs.get("refeed") if n_feed > 1 else 0.0)
        return d if gain * plain > cost else 0

    def chunk(self, feed: list[int], drafts: list[int]) -> list[int]:
        """The K + 1 tokens a verification feeds: the unfed tokens, the drafts, then the last draft repeated (its
        positions' probabilities are not used)."""
        pad = self.draft_tokens + 1 - len(feed) - len(drafts)
        return feed + drafts + drafts[-1:] * pad

    def _observe_acceptance(self, p: float) -> None:
        # p = the chance that the draft would be (or was) accepted at this position: its probability under the
        # final sampling distribution. Using the probability rather than the 0/1 outcome halves the noise, and
        # plain steps observe it too (the memory's draft against the distribution plain sampling used).
        self.accept += ACCEPT_WEIGHT * (p - self.accept)

    # ----- sampling -----
    def _final(self, probs_V: np.ndarray) -> np.ndarray:
        """The final sampling distribution: the sampler's rule with log p_mix as the logits."""
        return self.sampler.distribution_of_probs(self.memory.distribution(probs_V))

    def _learn(self, token: int, probs_V: np.ndarray) -> None:
        self.memory.learn(token, probs_V)
        self.sampler.observe(token)
        self.learned.append(token)

    def choose(self, probs_V: np.ndarray, draft: int | None = None) -> int:
        """A plain step: the next token from the mixture given the model's probabilities; the memory learns it.
        `draft`: the memory's proposal for this position, if any (updates the acceptance estimate)."""
        q = self._final(probs_V)
        if draft is not None:
            self._observe_acceptance(float(q[draft]))
        token = inverse_cdf(q, self.sampler.uniform())
        self._learn(token, probs_V)
        return token

    def verify(self, probs_TV: np.ndarray, drafts: list[int], stop: Callable[[int, int], bool]) -> list[int]:
        """The tokens a verification yields: probs_TV[j] is the model's distribution after the j-th drafted
        position (row 0: after the last unfed token, the position of drafts[0]). Each draft is accepted or
        replaced by `verify_draft`; after the last accepted draft one more token is drawn (the chunk gave its
        distribution for free). Stops after a token for which `stop(token, tokens yielded so far)` is true (end of
        text, the request's limit): the memory learns nothing after it."""
        out = []
        self.verifications += 1
        for j in range(len(drafts) + 1):
            probs = probs_TV[j]
            q = self._final(probs)
            if j < len(drafts):
                self.drafted += 1
                self._observe_acceptance(float(q[drafts[j]]))
                ok, token = verify_draft(q, drafts[j], self.sampler.uniform())
                self.accepted += ok
            else:
                ok, token = False, inverse_cdf(q, self.sampler.uniform())
            self._learn(token, probs)
            out.append(token)
            if stop(token, len(out)) or not ok:  # `stop` sees every token (the engine emits them there)
                break
        return out


def read_mark(tokens: list[int]) -> dict:
    """What a stored conversation memory has read (count and digest of the tokens, in order), kept in its
    state's `source` so the next turn absorbs only the new part of its prompt (which repeats the earlier turns)."""
    return {"memory_tokens": len(tokens),
            "memory_sha256": hashlib.sha256(np.asarray(tokens, np.int32).tobytes()).hexdigest()}


def read_upto(source: dict | None, prompt: list[int]) -> int:
    """How many leading tokens of `prompt` the stored memory has read already (0 unless its mark matches)."""
    n = (source or {}).get("memory_tokens")
    if not isinstance(n, int) or not 0 < n <= len(prompt):
        return 0
    return n if read_mark(prompt[:n])["memory_sha256"] == source.get("memory_sha256") else 0

