"""The inference engine: one model, continuous batching of decode steps, chunked prefill, a prefix-state cache.

Requests wait in a bounded queue. The engine thread loops: admit waiting requests into free rows,
prefill one chunk of one request (its longest cached prefix skipped), then run one decode step for every
running row at once (their states stacked on the batch axis; the batch is the next power of two above
the running rows, so a handful of shapes are compiled). A finished or cancelled request leaves its row
between steps and the last running row moves into the hole. Each row samples with its own settings
and PRNG key, so a request's tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import functools
import hashlib
import logging
import queue
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.model.state import State
from rwkvjax.serve.decode import Carry, decode_step, prefill
from rwkvjax.serve.sampling import Penalties, SamplingRows, token_weights

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The waiting queue is at its bound: the client should retry later."""


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
    ("done", {"finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"}) or ("error", str)."""

    prompt: list[int]
    start: State                 # batch-1 start state (zeros, or a named tuned state)
    start_key: str               # identifies the start state in the prefix cache ("base", a state id + version)
    sampling: Sampling
    emit: Callable[[str, object], None]
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    on_done: Callable[[str], None] | None = None  # called by the app with the whole reply (test-time training)
    # engine-side progress
    fed: int = 0                 # prompt tokens already in the state
    cached: int = 0              # of which came from the prefix cache
    generated: list[int] = dataclasses.field(default_factory=list)
    text: str = ""
    emitted: int = 0
    state: State | None = None
    decoder: object = None
    enqueued: float = dataclasses.field(default_factory=time.perf_counter)


class PrefixCache:
    """State after a token prefix, keyed by (start state, hash of the prefix), LRU bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._d: collections.OrderedDict[tuple[str, str], tuple[int, State, int]] = collections.OrderedDict()
        self._lengths: dict[str, set[int]] = collections.defaultdict(set)
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    @staticmethod
    def _nbytes(st: State) -> int:
        return sum(int(np.asarray(a).nbytes) for a in st)

    def put(self, start_key: str, tokens: list[int], state: State) -> None:
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

    def longest(self, start_key: str, tokens: list[int], limit: int) -> tuple[int, State | None]:
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
                 prefill_chunk: int = 256, cache_bytes: int = 256 << 20):
        self.params, self.config, self.tok = params, config, tokenizer
        self.max_batch, self.max_waiting, self.prefill_chunk = max_batch, max_waiting, prefill_chunk
        self.cache = PrefixCache(cache_bytes)
        self.weights = jnp.asarray(token_weights(tokenizer.decode_bytes, config.vocab_size))
        self._waiting: queue.Queue[Request] = queue.Queue()
        self._prefilling: list[Request] = []
        self._running: list[Request] = []
        self._carry: Carry | None = None    # rows of the running requests, padded to a power of two
        self._rows: SamplingRows | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.steps = 0
        self.errors = 0

    # ----- public -----
    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

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
            carry = decode_step(self.params, carry, rows, self.weights, config=self.config)
            for other in {max(B // 2, 1), sizes[min(sizes.index(B) + 1, len(sizes) - 1)]}:
                jax.block_until_ready(_resize(carry, other).token)
        return time.perf_counter() - t0

    def submit(self, req: Request) -> None:
        if self._waiting.qsize() + len(self._prefilling) >= self.max_waiting:
            raise QueueFull(f"{self.max_waiting} requests are waiting")
        self._waiting.put(req)
        self._wake.set()

    def stats(self) -> dict:
        return {"running": len(self._running), "prefilling": len(self._prefilling), "waiting": self._waiting.qsize(),
                "max_batch": self.max_batch, "steps": self.steps, "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses, "cache_bytes": self.cache.bytes, "errors": self.errors}

    # ----- the loop -----
    def _loop(self):
        while not self._stop.is_set():
            try:
                busy = self._admit() | self._prefill_one() | self._decode()
            except Exception as e:  # a bug must not hang every client: fail the requests in flight, keep serving
                log.exception("engine step failed")
                self.errors += 1
                for r in self._running + self._prefilling:
                    r.emit("error", f"internal error: {type(e).__name__}")
                self._running, self._prefilling, self._carry = [], [], None
                busy = True
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    def _admit(self) -> bool:
        admitted = False
        while len(self._running) + len(self._prefilling) < self.max_batch:
            try:
                r = self._waiting.get_nowait()
            except queue.Empty:
                break
            if r.cancelled.is_set():
                continue
            n, st = self.cache.longest(r.start_key, r.prompt, len(r.prompt) - 1)
            r.fed = r.cached = n
            r.state = jax.tree.map(jnp.asarray, st) if st is not None else r.start
            r.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
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
            r.state = prefill(self.params, self.config, r.prompt[r.fed:r.fed + n], r.state, chunk=self.prefill_chunk)
            r.fed += n
            if r.fed == len(r.prompt) - 1:
                self.cache.put(r.start_key, r.prompt[:r.fed], r.state)
            return True
        self._prefilling.pop(0)
        self._join(r)
        return True

    def _join(self, r: Request) -> None:
        s = r.sampling
        seed = s.seed if s.seed is not None else int.from_bytes(hashlib.sha256(str(time.time_ns()).encode())
                                                                .digest()[:4], "little")
        row = Carry(jnp.asarray([r.prompt[-1]], jnp.int32), r.state, Penalties.zeros(1, self.config.vocab_size),
                    jax.random.key(seed)[None])
        n = len(self._running)
        if self._carry is None:
            self._carry = _resize(row, 1)
        elif n == self._carry.token.shape[0]:
            self._carry = _resize(self._carry, min(2 * n, self.max_batch))
        self._carry = _put_row(self._carry, row, jnp.int32(n))
        self._running.append(r)
        self._sampling_rows()

    def _sampling_rows(self) -> None:
        B = self._carry.token.shape[0]
        rows = [dataclasses.asdict(r.sampling) for r in self._running]
        self._rows = SamplingRows.of(rows + [rows[0]] * (B - len(rows)))

    def _decode(self) -> bool:
        if not self._running:
            return False
        self._carry = decode_step(self.params, self._carry, self._rows, self.weights, config=self.config)
        self.steps += 1
        tokens = np.asarray(self._carry.token)
        done = []
        for i, r in enumerate(self._running):
            if r.cancelled.is_set():
                done.append(i)
                continue
            if self._emit_token(r, int(tokens[i])):
                done.append(i)
        if done:
            self._finish(done)
        return True

    def _emit_token(self, r: Request, t: int) -> bool:
        """Deliver one generated token; True when the request is finished."""
        s = r.sampling
        if t == 0:  # end of text
            self._close(r, "stop")
            return True
        r.generated.append(t)
        r.text += r.decoder.decode(self.tok.decode_bytes([t]))
        cut = min((i for i in (r.text.find(x, max(r.emitted - len(x), 0)) for x in s.stop) if i >= 0), default=-1)
        if cut >= 0:
            if cut > r.emitted:
                r.emit("text", r.text[r.emitted:cut])
            r.emitted = cut
            self._close(r, "stop")
            return True
        if len(r.generated) >= s.max_tokens:
            r.text += r.decoder.decode(b"", final=True)
            if len(r.text) > r.emitted:
                r.emit("text", r.text[r.emitted:])
            r.emitted = len(r.text)
            self._close(r, "length")
            return True
        hold = max((len(x) - 1 for x in s.stop), default=0)  # a stop string may be starting
        upto = len(r.text) - hold
        if upto > r.emitted:
            r.emit("text", r.text[r.emitted:upto])
            r.emitted = upto
        return False

    def _close(self, r: Request, reason: str) -> None:
        r.emit("done", {"finish_reason": reason, "prompt_tokens": len(r.prompt),
                        "completion_tokens": len(r.generated), "cached_tokens": r.cached})

    def _finish(self, idx: list[int]) -> None:
        """Drop finished rows (their final states go to the prefix cache): the last running row moves into each
        hole, and the batch halves once it is at most half full."""
        for i in idx:
            r = self._running[i]
            if not r.cancelled.is_set() and r.generated:
                # the state has read the prompt and every generated token but the last
                self.cache.put(r.start_key, r.prompt + r.generated[:-1], _row_state(self._carry.state, jnp.int32(i)))
        for i in sorted(idx, reverse=True):
            last = len(self._running) - 1
            if i != last:
                self._carry = _move_row(self._carry, jnp.int32(last), jnp.int32(i))
                self._running[i] = self._running[last]
            self._running.pop()
        if not self._running:
            self._carry, self._rows = None, None
            return
        B = self._carry.token.shape[0]
        while B > 1 and len(self._running) <= B // 2:
            B //= 2
        if B != self._carry.token.shape[0]:
            self._carry = _resize(self._carry, B)
        self._sampling_rows()


def _rows_of(carry: Carry, fn):
    """Apply `fn(array, batch_axis)` to every array of a carry (the state's batch axis is 1)."""
    return Carry(fn(carry.token, 0), State(*(fn(a, 1) for a in carry.state)),
                 Penalties(fn(carry.pen.occurrence, 0), fn(carry.pen.seen, 0)), fn(carry.keys, 0))


@functools.partial(jax.jit, static_argnums=(1,))
def _resize(carry: Carry, B: int) -> Carry:
    """The first B rows, or all rows then copies of row 0 up to B (a fresh buffer)."""
    def fn(a, ax):
        n = a.shape[ax]
        if B <= n:
            return jax.lax.slice_in_dim(a, 0, B, axis=ax)
        pad = jnp.repeat(jax.lax.slice_in_dim(a, 0, 1, axis=ax), B - n, axis=ax)
        return jnp.concatenate([a, pad], axis=ax)
    return _rows_of(carry, fn)


@functools.partial(jax.jit, donate_argnums=(0,))
def _put_row(carry: Carry, row: Carry, i) -> Carry:
    parts = iter(jax.tree.leaves(row))
    leaves = [jax.lax.dynamic_update_slice_in_dim(a, next(parts), i, axis=ax) for a, ax in _axes(carry)]
    return jax.tree.unflatten(jax.tree.structure(carry), leaves)


@functools.partial(jax.jit, donate_argnums=(0,))
def _move_row(carry: Carry, src, dst) -> Carry:
    leaves = [jax.lax.dynamic_update_slice_in_dim(a, jax.lax.dynamic_slice_in_dim(a, src, 1, axis=ax), dst, axis=ax)
              for a, ax in _axes(carry)]
    return jax.tree.unflatten(jax.tree.structure(carry), leaves)


@jax.jit
def _row_state(state: State, i) -> State:
    return State(*(jax.lax.dynamic_slice_in_dim(a, i, 1, axis=1) for a in state))


def _axes(carry: Carry):
    """(leaf, batch axis) in tree order: token, the three state arrays, occurrence, seen, keys."""
    axes = [0, 1, 1, 1, 0, 0, 0]
    return list(zip(jax.tree.leaves(carry), axes))

