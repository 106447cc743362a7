"""The inference engine: one model, continuous batching of decode steps, chunked prefill, a prefix-state cache.

Requests wait in a bounded queue. The engine thread loops: admit waiting requests into free rows,
prefill one chunk of one request (its longest cached prefix skipped), then run one decode step for every
running row at once (their states stacked on the batch axis; the batch is the next power of two above
the running rows, so a handful of shapes are compiled). A finished or cancelled request leaves its row
between steps and the last running row moves into the hole. Each row samples with its own settings
and PRNG key, so a request's tokens do not depend on who else is in the batch.

A request with a session memory (`Request.memory`) samples from the mixture: the step hands every row's
probabilities to the host, where that row's `mixture.MemoryDecoder` chooses its token and its memory learns it.
Such a row may instead leave the batched step for one of its own calls: a speculative verification of the
memory's drafts (one chunked forward of K + 1 tokens from its state), or the prefill of accepted tokens its
state has not read after a rejected draft. Rows without a memory take the step exactly as before; when no
running row has a memory, the step is the one without the host round trip.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import logging
import queue
import threading
import time
from typing import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.model.state import State
from rwkvjax.serve.decode import Carry, decode_step, decode_step_probs, forward_probs, prefill
from rwkvjax.serve.detok import Detokenizer
from rwkvjax.serve.mixture import Costs, MemoryDecoder, Timer
from rwkvjax.serve.sampling import Penalties, RowSampler, SamplingRows, token_weights

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The waiting queue is at its bound: the client should retry later."""


class ShuttingDown(Exception):
    """The engine is draining for a shutdown (`Engine.drain`): it takes no new request."""


# The finish reason of a reply the shutdown deadline cut short: OpenAI's value for a reply that ran into a limit.
SHUTDOWN_REASON = "length"


@dataclasses.dataclass
class Sampling:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence: float = 0.0
    frequency: float = 0.0
    decay: float = 0.996
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclasses.dataclass
class Request:
    """One generation. `emit(kind, payload)` is called from the engine thread: ("text", str) pieces, then one
    ("done", {"finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"} and "stop_sequence" when a
    stop string ended it), ("error", str), or ("unavailable", str) for a request a shutdown ended before it
    produced anything.

    `partition`: whose prefix-cache entries the request may read and add to (the app passes one per API key): a
    hit, which `cached_tokens` reports, then says nothing about another principal's prompts."""

    prompt: list[int]
    start: State                 # batch-1 start state (zeros, or a named tuned state)
    start_key: str               # identifies the start state in the prefix cache ("base", a state id + version)
    sampling: Sampling
    emit: Callable[[str, object], None]
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    on_done: Callable[[str], None] | None = None  # called by the app with the whole reply (test-time training)
    memory: object = None        # a SessionMemory (a scratch copy; the prompt absorbed): sample from the mixture
    draft_tokens: int = 0        # with a memory: drafts verified per forward at most (0: no speculation)
    partition: str = ""          # the prefix cache's partition (one per API key)
    # engine-side progress
    fed: int = 0                 # prompt tokens already in the state
    cached: int = 0              # of which came from the prefix cache
    generated: list[int] = dataclasses.field(default_factory=list)
    state: State | None = None
    detok: Detokenizer | None = None     # the reply's text so far, and its stop strings
    mixture: MemoryDecoder | None = None  # the host side of a row with a memory
    feed: list[int] = dataclasses.field(default_factory=list)  # tokens chosen but not yet in the row's state
    in_state: int = 0            # tokens of prompt + generated the row's state has read (the prefix cache's key)
    enqueued: float = dataclasses.field(default_factory=time.perf_counter)
    first_token_at: float | None = None  # perf_counter of the first generated token: the time to first token
    last_token_at: float | None = None   # ... of the latest: with the first, the decode rate in `usage`

    @property
    def cache_scope(self) -> tuple[str, str]:
        """The prefix cache's key space of this request: its partition, then its start state."""
        return self.partition, self.start_key


class PrefixCache:
    """State after a token prefix, keyed by (scope, hash of the prefix), LRU bounded in bytes. A scope is any
    hashable value: the engine's is (partition, start state), so entries of one partition never serve another."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._d: collections.OrderedDict[tuple[Hashable, str], tuple[int, State, int]] = collections.OrderedDict()
        self._lengths: dict[Hashable, set[int]] = collections.defaultdict(set)
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    @staticmethod
    def _nbytes(st: State) -> int:
        return sum(int(np.asarray(a).nbytes) for a in st)

    def put(self, start_key: Hashable, tokens: list[int], state: State) -> None:
        if not tokens or self.max_bytes <= 0:
            return
        host = State(*(np.asarray(a) for a in state))
        size = self._nbytes(host)
        if size > self.max_bytes:
            return
        key = (start_key, hashlib.sha256(np.asarray(tokens, np.int32).tobytes()).hexdigest())
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return
            self._d[key] = (len(tokens), host, size)
            self._lengths[start_key].add(len(tokens))
            self.bytes += size
            while self.bytes > self.max_bytes:
                (sk, _), (n, _, sz) = self._d.popitem(last=False)
                self.bytes -= sz
                if not any(k[0] == sk and v[0] == n for k, v in self._d.items()):
                    self._lengths[sk].discard(n)

    def longest(self, start_key: Hashable, tokens: list[int], limit: int) -> tuple[int, State | None]:
        """(length, state) of the longest cached prefix of `tokens` no longer than `limit`."""
        arr = np.asarray(tokens, np.int32)
        with self._lock:
            lengths = sorted((n for n in self._lengths.get(start_key, ()) if n <= limit), reverse=True)
            for n in lengths:
                key = (start_key, hashlib.sha256(arr[:n].tobytes()).hexdigest())
                if key in self._d:
                    self._d.move_to_end(key)
                    self.hits += 1
                    return n, self._d[key][1]
            self.misses += 1
        return 0, None


class Engine:
    def __init__(self, params, config, tokenizer, *, max_batch: int = 64, max_waiting: int = 256,
                 prefill_chunk: int = 256, cache_bytes: int = 256 << 20, memory: bool = False,
                 draft_tokens: int = 0):
        """`memory`: requests will come with session memories (warmup compiles the step that hands the
        probabilities to the host); `draft_tokens`: the K of their speculative verifications (its shape is
        compiled at warmup)."""
        self.params, self.config, self.tok = params, config, tokenizer
        self.max_batch, self.max_waiting, self.prefill_chunk = max_batch, max_waiting, prefill_chunk
        self.memory, self.draft_tokens = memory, draft_tokens
        self.cache = PrefixCache(cache_bytes)
        self.weights_np = token_weights(tokenizer.decode_bytes, config.vocab_size)
        self.weights = jnp.asarray(self.weights_np)
        self.costs, self.timer = Costs(), Timer()
        self.spec = {"drafted": 0, "accepted": 0, "verifications": 0, "memory_rows": 0}
        self._no_pen = Penalties.zeros(1, config.vocab_size)  # placeholders of rows sampled on the host
        self._no_key = jax.random.key(0)[None]
        self._waiting: queue.Queue[Request] = queue.Queue()
        self._prefilling: list[Request] = []
        self._running: list[Request] = []
        self._carry: Carry | None = None    # rows of the running requests, padded to a power of two
        self._rows: SamplingRows | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_at: float | None = None  # monotonic deadline of a shutdown's drain (`drain`), None until one
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.steps = 0
        self.errors = 0
        # told each token's gap and each finished request (`serve.metrics.Metrics`), from the engine thread; None:
        # nothing is measured
        self.observer = None

    # ----- public -----
    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def drain(self, deadline_s: float) -> None:
        """A shutdown began: refuse new requests (`submit` raises ShuttingDown) and let the ones already taken
        run; at `deadline_s` from now, end every one still unfinished (`_end_all`), so each client gets a final
        answer before the process goes. Called from any thread; a second call keeps the first deadline."""
        if self._drain_at is None:
            self._drain_at = time.monotonic() + max(deadline_s, 0.0)
        self._wake.set()

    @property
    def draining(self) -> bool:
        return self._drain_at is not None

    def warmup(self) -> float:
        """Compile every shape the loop can meet (decode batches 1, 2, 4, ... max_batch; prefill pieces 1, 2, 4,
        ... prefill_chunk) before the first client waits on a compile. Returns the seconds it took."""
        from rwkvjax.model.state import zero_state
        t0 = time.perf_counter()
        V = self.config.vocab_size
        one = zero_state(self.config, 1)
        n = 1
        while n <= self.prefill_chunk:
            jax.block_until_ready(prefill(self.params, self.config, np.ones(n, np.int32), one,
                                          chunk=self.prefill_chunk))
            n *= 2
        row = Carry(jnp.ones((1,), jnp.int32), zero_state(self.config, 1), Penalties.zeros(1, V),
                    jax.random.key(0)[None])
        sizes = [1]
        while sizes[-1] < self.max_batch:
            sizes.append(min(2 * sizes[-1], self.max_batch))
        for B in sizes:
            carry = _put_row(_resize(row, B), row, jnp.int32(B - 1))
            carry = _move_row(carry, jnp.int32(B - 1), jnp.int32(0))
            jax.block_until_ready(_row_state(carry.state, jnp.int32(0)))
            rows = SamplingRows.of([dataclasses.asdict(Sampling())] * B)
            if self.memory:
                carry, probs = decode_step_probs(self.params, carry, rows, self.weights, np.zeros(B, np.int32),
                                                 np.zeros(B, bool), config=self.config)
                np.asarray(probs)
            else:
                carry = decode_step(self.params, carry, rows, self.weights, config=self.config)
            for other in {max(B // 2, 1), sizes[min(sizes.index(B) + 1, len(sizes) - 1)]}:
                jax.block_until_ready(_resize(carry, other).next_id)
        if self.memory and self.draft_tokens > 0:
            T = self.draft_tokens + 1
            self.timer.shapes.add(("verify", T))
            np.asarray(forward_probs(self.params, jnp.ones((1, T), jnp.int32), one, config=self.config)[0])
        return time.perf_counter() - t0

    def submit(self, req: Request) -> None:
        if self._drain_at is not None:
            raise ShuttingDown("the server is shutting down")
        if self._waiting.qsize() + len(self._prefilling) >= self.max_waiting:
            raise QueueFull(f"{self.max_waiting} requests are waiting")
        self._waiting.put(req)
        self._wake.set()

    def stats(self) -> dict:
        return {"running": len(self._running), "prefilling": len(self._prefilling), "waiting": self._waiting.qsize(),
                "max_batch": self.max_batch, "steps": self.steps, "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses, "cache_bytes": self.cache.bytes, "errors": self.errors,
                "memory": self.memory, "draft_tokens": self.draft_tokens if self.memory else 0,
                "speculation": dict(self.spec), "draining": self.draining}

    # ----- the loop -----
    def _loop(self):
        while not self._stop.is_set():
            if self._drain_at is not None and time.monotonic() >= self._drain_at:
                self._end_all()
            try:
                busy = self._admit() | self._prefill_one() | self._decode()
            except Exception as e:
                # What one row does (its admission, prefill, sampling, text) fails only its request, where it
                # happens (`_fail`); what reaches here broke the batch itself (the stacked step, moving rows), so
                # no row's state can be trusted: every request in flight is answered with an error, none left
                # waiting, and the engine goes on serving those still queued.
                log.exception("engine step failed")
                self.errors += 1
                for r in self._running + self._prefilling:
                    self._answer_error(r, e)
                self._running, self._prefilling, self._carry, self._rows = [], [], None, None
                busy = True
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    def _end_all(self) -> None:
        """The drain's deadline: every running request ends now as a reply cut at a limit (its held-back text,
        then "done" with SHUTDOWN_REASON and its usage); one that has produced nothing yet (queued, prefilling)
        gets "unavailable", which the app answers as a 503 (or an error event and the stream's end)."""
        for r in self._running:
            if r.cancelled.is_set():
                continue
            r.cancelled.set()
            try:
                self._send(r, r.detok.finish())
                self._close(r, SHUTDOWN_REASON)
            except Exception:  # the client's side is gone: nobody is left to answer
                log.debug("could not deliver a shutdown's final event", exc_info=True)
        unstarted = self._prefilling
        while True:
            try:
                unstarted.append(self._waiting.get_nowait())
            except queue.Empty:
                break
        for r in unstarted:
            if r.cancelled.is_set():
                continue
            r.cancelled.set()
            try:
                r.emit("unavailable", "the server is shutting down; retry on another instance or later")
            except Exception:
                log.debug("could not deliver a shutdown's final event", exc_info=True)
        self._running, self._prefilling, self._carry, self._rows = [], [], None, None

    def _fail(self, r: Request, e: Exception) -> None:
        """One request's row failed: it alone gets an error event and leaves (it is marked cancelled, so every
        path that meets it next drops its row as it drops a client's cancellation)."""
        log.error("request failed in the engine: %s: %s", type(e).__name__, e, exc_info=e)
        self.errors += 1
        self._answer_error(r, e)

    @staticmethod
    def _answer_error(r: Request, e: Exception) -> None:
        r.cancelled.set()
        try:
            r.emit("error", f"internal error: {type(e).__name__}")
        except Exception:  # the client's side is gone (its event loop closed): nobody is left to answer
            log.debug("could not deliver an error event", exc_info=True)

    def _admit(self) -> bool:
        admitted = False
        while len(self._running) + len(self._prefilling) < self.max_batch:
            try:
                r = self._waiting.get_nowait()
            except queue.Empty:
                break
            if r.cancelled.is_set():
                continue
            try:
                n, st = self.cache.longest(r.cache_scope, r.prompt, len(r.prompt) - 1)
                r.fed = r.cached = n
                r.state = jax.tree.map(jnp.asarray, st) if st is not None else r.start
                r.detok = Detokenizer(self.tok.decode_bytes, r.sampling.stop)
            except Exception as e:
                self._fail(r, e)
                continue
            self._prefilling.append(r)
            admitted = True
        return admitted

    def _prefill_one(self) -> bool:
        """One chunk of the oldest prefilling request; a request whose prompt is in its state starts decoding."""
        self._prefilling = [r for r in self._prefilling if not r.cancelled.is_set()]
        if not self._prefilling:
            return False
        r = self._prefilling[0]
        todo = len(r.prompt) - 1 - r.fed  # the last prompt token is fed by the first decode step
        if todo > 0:
            n = min(todo, self.prefill_chunk)
            try:  # the request's own forward: a failure is its alone
                r.state = prefill(self.params, self.config, r.prompt[r.fed:r.fed + n], r.state,
                                  chunk=self.prefill_chunk)
                r.fed += n
                if r.fed == len(r.prompt) - 1:
                    self.cache.put(r.cache_scope, r.prompt[:r.fed], r.state)
            except Exception as e:
                self._prefilling.pop(0)
                self._fail(r, e)
            return True
        self._join(r)  # still listed as prefilling until it has a row: a batch failure meanwhile answers it too
        self._prefilling.pop(0)
        return True

    def _join(self, r: Request) -> None:
        s = r.sampling
        seed = s.seed if s.seed is not None else int.from_bytes(hashlib.sha256(str(time.time_ns()).encode())
                                                                .digest()[:4], "little")
        try:  # everything of the row alone, before the batch is touched: a row that cannot be made fails alone
            row = Carry(jnp.asarray([r.prompt[-1]], jnp.int32), r.state, Penalties.zeros(1, self.config.vocab_size),
                        jax.random.key(seed)[None])
            SamplingRows.of([dataclasses.asdict(s)])  # its settings fit the batch's arrays (top_k is int32)
            if r.memory is not None:
                # numpy's generator takes no negative seed: the same 64 bits, read unsigned
                sampler = RowSampler(dataclasses.asdict(s), self.weights_np, seed % (1 << 64))
                r.mixture = MemoryDecoder(r.memory, sampler, r.draft_tokens)
        except Exception as e:
            self._fail(r, e)
            return
        r.feed, r.in_state = [r.prompt[-1]], len(r.prompt) - 1
        if r.mixture is not None:
            self.spec["memory_rows"] += 1
        n = len(self._running)
        if self._carry is None:
            self._carry = _resize(row, 1)
        elif n == self._carry.next_id.shape[0]:
            self._carry = _resize(self._carry, min(2 * n, self.max_batch))
        self._carry = _put_row(self._carry, row, jnp.int32(n))
        self._running.append(r)
        self._sampling_rows()

    def _sampling_rows(self) -> None:
        B = self._carry.next_id.shape[0]
        rows = [dataclasses.asdict(r.sampling) for r in self._running]
        self._rows = SamplingRows.of(rows + [rows[0]] * (B - len(rows)))

    def _decode(self) -> bool:
        if not self._running:
            return False
        if not any(r.mixture is not None for r in self._running):
            self._carry = decode_step(self.params, self._carry, self._rows, self.weights, config=self.config)
            self.steps += 1
            tokens = np.asarray(self._carry.next_id)
            done = []
            for i, r in enumerate(self._running):
                r.in_state += 1
                if r.cancelled.is_set():
                    done.append(i)
                    continue
                try:
                    if self._emit_token(r, int(tokens[i])):
                        done.append(i)
                except Exception as e:  # this row's text or delivery: its request alone fails
                    self._fail(r, e)
                    done.append(i)
            if done:
                self._finish(done)
            return True
        return self._decode_mixed()

    def _decode_mixed(self) -> bool:
        """One step when some rows sample from a memory: rows that verify drafts run their own forward, rows
        with unfed tokens prefill them and join, every other row takes the batched step."""
        running = self._running
        drafts, own, verify = {}, {}, {}
        step_kind = f"step@{self._carry.next_id.shape[0]}"  # a row's share of the batched step at this batch size
        for i, r in enumerate(running):
            if r.mixture is None or r.cancelled.is_set():
                continue
            try:
                drafts[i] = r.mixture.drafts()
                d = r.mixture.speculate(len(r.feed), drafts[i], self.costs, step_kind)
            except Exception as e:  # cancelled now: the row takes the step and leaves after it
                self._fail(r, e)
                continue
            if d:
                verify[i] = d
            if d or len(r.feed) > 1:
                own[i] = _row_state(self._carry.state, jnp.int32(i))
        finished: set[int] = set()
        states: dict[int, State] = {}  # rows whose state is put back after the batched step
        for i, d in verify.items():
            try:
                self._verify_row(i, d, running[i], drafts[i], own, states, finished)
            except Exception as e:  # the row's own forward and sampling: it leaves with the finished rows
                self._fail(running[i], e)
        for i in own:
            if i not in verify and not running[i].cancelled.is_set():
                # unfed tokens after a rejection: prefilled, then the row takes the step
                r = running[i]
                try:
                    n = len(r.feed) - 1
                    with self.timer("refeed", self.costs, ("refeed", n)):
                        st = jax.block_until_ready(prefill(self.params, self.config, r.feed[:-1], own[i],
                                                           chunk=self.prefill_chunk))
                except Exception as e:  # cancelled now: it takes the step with its old state and leaves
                    self._fail(r, e)
                    continue
                r.in_state, r.feed = r.in_state + n, r.feed[-1:]
                self._carry = _put_row(self._carry, self._host_row(r.feed[0], st), jnp.int32(i))
        stepping = [i for i in range(len(running)) if i not in verify]
        if stepping:
            B = self._carry.next_id.shape[0]
            feed, host = np.zeros(B, np.int32), np.zeros(B, bool)
            for i, r in enumerate(running):
                if r.mixture is not None:  # the host's choice is what the row feeds, not the step's own sample
                    feed[i], host[i] = r.feed[-1], True
            with self.timer(step_kind, self.costs, step_kind, 1 / len(stepping)):
                self._carry, probs = decode_step_probs(self.params, self._carry, self._rows, self.weights, feed,
                                                       host, config=self.config)
                tokens = np.asarray(self._carry.next_id)
                probs = np.asarray(probs)
            self.steps += 1
        for i, st in states.items():
            self._carry = _put_row(self._carry, self._host_row(running[i].feed[-1], st), jnp.int32(i))
        for i in stepping:
            r = running[i]
            r.in_state += 1
            if r.cancelled.is_set():
                finished.add(i)
                continue
            try:
                if r.mixture is not None:
                    d = drafts.get(i) or []
                    t = r.mixture.choose(probs[i], d[0] if d else None)
                    r.feed = [t]
                else:
                    t = int(tokens[i])
                if self._emit_token(r, t):
                    finished.add(i)
            except Exception as e:  # this row's sampling or text: its request alone fails
                self._fail(r, e)
                finished.add(i)
        for i in verify:
            if running[i].cancelled.is_set():
                finished.add(i)
        if finished:
            self._finish(sorted(finished))
        return True

    def _verify_row(self, i: int, d: int, r: Request, drafts: list[int], own: dict, states: dict,
                    finished: set) -> None:
        """Row i's speculative verification of its first `d` drafts: one forward of its own, then its tokens; the
        state it continues from goes to `states`."""
        chunk = r.mixture.chunk(r.feed, drafts[:d])
        with self.timer("verify", self.costs, ("verify", len(chunk))):
            probs, after = forward_probs(self.params, np.asarray([chunk], np.int32), own[i], config=self.config)
            probs = np.asarray(probs)
        ended = []

        def stop(t, n):
            ended.append(self._emit_token(r, t))
            return ended[-1]

        out = r.mixture.verify(probs[len(r.feed) - 1:], drafts[:d], stop)
        if ended and ended[-1]:
            finished.add(i)
            states[i] = own[i]
        elif len(out) == d + 1 and len(r.feed) + d == len(chunk):  # all drafts passed, no padding: its state
            states[i], r.in_state, r.feed = after, r.in_state + len(chunk), [out[-1]]
        else:                    # the state before the chunk; the accepted tokens wait to be fed
            states[i], r.feed = own[i], r.feed + out

    def _host_row(self, token: int, state: State) -> Carry:
        """A row of the carry for a request sampled on the host (its device penalties and key are not used)."""
        return Carry(np.asarray([token], np.int32), state, self._no_pen, self._no_key)

    def _emit_token(self, r: Request, t: int) -> bool:
        """Deliver one generated token; True when the request is finished."""
        if t == 0:  # end of text: the held-back text was not the start of a stop string after all
            self._send(r, r.detok.finish())
            self._close(r, "stop")
            return True
        r.generated.append(t)
        now = time.perf_counter()
        if r.first_token_at is None:
            r.first_token_at = now
        elif self.observer is not None:
            self.observer.token_gap(now - r.last_token_at)
        r.last_token_at = now
        self._send(r, r.detok.push(t))
        if r.detok.stopped:
            self._close(r, "stop")
            return True
        if len(r.generated) >= r.sampling.max_tokens:
            self._send(r, r.detok.finish())
            self._close(r, "length")
            return True
        return False

    @staticmethod
    def _send(r: Request, piece: str) -> None:
        if piece:
            r.emit("text", piece)

    def _close(self, r: Request, reason: str) -> None:
        # which stop string ended the reply, if one did (not the end of text or a limit): Anthropic's API reports
        # it, and a chat's own turn end must be told apart from a client's stop string. The detokenizer stops at
        # the earliest match and keeps the text from it on, so the match is the stop string that text starts with.
        d = r.detok
        stop = ({"stop_sequence": next(s for s in d.stop if d.text.startswith(s, d.emitted))}
                if d is not None and d.stopped else {})
        if self.observer is not None:  # before the client hears of the end: a scrape after the reply counts it
            self.observer.finished(r)
        r.emit("done", {"finish_reason": reason, "prompt_tokens": len(r.prompt),
                        "completion_tokens": len(r.generated), "cached_tokens": r.cached, **stop})

    def _finish(self, idx: list[int]) -> None:
        """Drop finished rows (their final states go to the prefix cache): the last running row moves into each
        hole, and the batch halves once it is at most half full."""
        for i in idx:
            r = self._running[i]
            if not r.cancelled.is_set() and r.generated:
                # the row's state has read the prompt and the generated tokens up to `in_state` (all but the last
                # one sampled, or all of them when the last one sampled was the end of text)
                self.cache.put(r.cache_scope, (r.prompt + r.generated)[:r.in_state],
                               _row_state(self._carry.state, jnp.int32(i)))
            if r.mixture is not None:
                for k in ("drafted", "accepted", "verifications"):
                    self.spec[k] += getattr(r.mixture, k)
        for i in sorted(idx, reverse=True):
            last = len(self._running) - 1
            if i != last:
                self._carry = _move_row(self._carry, jnp.int32(last), jnp.int32(i))
                self._running[i] = self._running[last]
            self._running.pop()
        if not self._running:
            self._carry, self._rows = None, None
            return
        B = self._carry.next_id.shape[0]
        while B > 1 and len(self._running) <= B // 2:
            B //= 2
        if B != self._carry.next_id.shape[0]:
            self._carry = _resize(self._carry, B)
        self._sampling_rows()


@functools.partial(jax.jit, static_argnums=(1,))
def _resize(carry: Carry, B: int) -> Carry:
    """The first B rows, or all rows then copies of row 0 up to B (a fresh buffer)."""
    def fn(a, axis):
        n = a.shape[axis]
        if B <= n:
            return jax.lax.slice_in_dim(a, 0, B, axis=axis)
        pad = jnp.repeat(jax.lax.slice_in_dim(a, 0, 1, axis=axis), B - n, axis=axis)
        return jnp.concatenate([a, pad], axis=axis)
    return carry.map_rows(fn)


@functools.partial(jax.jit, donate_argnums=(0,))
def _put_row(carry: Carry, row: Carry, i) -> Carry:
    return carry.map_rows(lambda a, r, axis: jax.lax.dynamic_update_slice_in_dim(a, r, i, axis=axis), row)


@functools.partial(jax.jit, donate_argnums=(0,))
def _move_row(carry: Carry, src, dst) -> Carry:
    return carry.map_rows(lambda a, axis: jax.lax.dynamic_update_slice_in_dim(
        a, jax.lax.dynamic_slice_in_dim(a, src, 1, axis=axis), dst, axis=axis))


@jax.jit
def _row_state(state: State, i) -> State:
    axis = Carry.batch_axes()["state"]
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1, axis=axis), state)
