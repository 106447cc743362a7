"""`python cli.py serve`: the model, its tokenizer, the engine and the named states behind the HTTP app.

With the session memory on (the default), every request samples from the mixture of the model and a scratch
memory of its own: a copy-on-write mapping of the memory stored with the state its `model` names (nothing it
learns reaches the file or any other request), or an empty one for `base` and states without a memory. The
prompt is absorbed into it; the reply is learned token by token. Only a `--ttt` conversation keeps its
memory: stored with the conversation's state `conv/<model>/<session>` after each turn.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading

import jax.numpy as jnp

from rwkvjax.io.states import BASE, StateStore, UnknownState, conversation_name
from rwkvjax.model.state import State, start_state, zero_state
from rwkvjax.serve.mixture import read_upto

log = logging.getLogger(__name__)

LOADED_STATES = 64  # start states kept loaded (a 1.5B model's is 13 MB); the store holds the rest


def unknown_model(name: str) -> str:
    """A 404's message: only that the name is unknown. The store's own error names its folder and every state,
    other clients' conversations included, which is nothing to tell a client."""
    return f"model {name!r} does not exist (GET /v1/models lists them)"


class Server:
    def __init__(self, cfg, model=None):
        from rwkvjax.serve.engine import Engine
        self.cfg = cfg
        if model is None:
            from rwkvjax.io.formats import load
            model = load(cfg.model, dtype=cfg.dtype)
        params = model.params  # stacked: what --ttt's learner takes
        self.model = model if cfg.ttt else model.decoding()  # without --ttt only the decoding copy is kept
        self.config = model.arch
        self.tokenizer = model.tokenizer
        self.base_hash = model.hash  # of the stacked form, as `train` records it
        self.params = self.model.decode_params
        self.tok_id = model.tokenizer_id
        self.model_name = str(cfg.model)
        self.store = StateStore(cfg.states, create=False) if cfg.states else None
        self.api_key = cfg.api_key
        self.default_max_tokens = cfg.max_tokens
        self.max_prompt_tokens = cfg.max_prompt_tokens
        self.max_tokens_cap = cfg.max_tokens_cap
        self.max_body_bytes = int(cfg.max_body_mb * (1 << 20))
        self.read_timeout_s = cfg.read_timeout_s
        from rwkvjax.serve.config import draft_tokens_of
        self.draft_tokens = draft_tokens_of(cfg)
        self.memory_settings = None
        if cfg.memory:
            from rwkvjax.memory.memory import MemorySettings
            self.memory_settings = MemorySettings.for_vocab(self.config.vocab_size, cfg.memory_mb)
        self.engine = Engine(self.params, self.config, self.tokenizer, max_batch=cfg.max_batch,
                             max_waiting=cfg.max_waiting, prefill_chunk=cfg.prefill_chunk,
                             cache_bytes=cfg.cache_mb << 20, memory=cfg.memory, draft_tokens=self.draft_tokens)
        # loaded start states by id, least recently used first: bounded, since every --ttt conversation is a state
        self._states: collections.OrderedDict[str, tuple[tuple, State]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.tuner = None
        if cfg.ttt:  # the learner takes the stacked weights (the engine decodes on the per-layer copy)
            from rwkvjax.serve.ttt import ConversationTuner, TTTSettings
            self.tuner = ConversationTuner(self.config, params, self.tokenizer, StateStore(cfg.states),
                                           base_hash=self.base_hash, tokenizer_id=self.tok_id,
                                           settings=TTTSettings(steps=cfg.ttt_steps, lr=cfg.ttt_lr,
                                                                max_queued=cfg.ttt_queue,
                                                                max_conversations=cfg.ttt_max_conversations))

    def conversation(self, model: str, session: str) -> tuple[str, str | None]:
        """(the conversation's state name, the state it starts from: None for the base model)."""
        parent = None if model in (BASE, self.model_name) else model
        # its own namespace (`io.states.CONVERSATIONS`): a session named like a shared state never replaces it
        return conversation_name(parent or BASE, session), parent

    def has_state(self, name: str) -> bool:
        return self.store is not None and any(r.name == name for r in self.store.records())

    def start_state(self, name: str) -> tuple[State, str]:
        """(batch-1 start state, its prefix-cache key) for a request's `model` field; LookupError if unknown."""
        if name in (BASE, self.model_name):
            return zero_state(self.config, 1), BASE
        if self.store is None:
            raise LookupError(f"model {name!r}: this server has no --states folder; use {BASE!r}")
        try:
            rec = self.store.get(name)
        except UnknownState:
            raise LookupError(unknown_model(name)) from None
        version = (rec.id, rec.created)
        with self._lock:
            hit = self._states.get(rec.id)
            if hit is not None and hit[0] == version:
                self._states.move_to_end(rec.id)
                return hit[1], f"{rec.id}@{rec.created}"
        rec, arrays = self.store.load(rec.id, base_hash=self.base_hash, tokenizer=self.tok_id)
        st = start_state(jnp.asarray(arrays["wkv"]), 1, att_shift_LC=arrays.get("att_shift"),
                         ffn_shift_LC=arrays.get("ffn_shift"))
        with self._lock:
            self._states[rec.id] = (version, st)
            self._states.move_to_end(rec.id)
            while len(self._states) > LOADED_STATES:
                self._states.popitem(last=False)
        return st, f"{rec.id}@{rec.created}"

    def request_memory(self, name: str, prompt: list[int]):
        """A request's scratch memory (None with --no-memory): the memory stored with state `name`, mapped
        copy-on-write (learning in it never reaches the file nor another request), or an empty one; the prompt
        absorbed into it, but for the part a conversation's stored memory has already read (`mixture.read_mark`)."""
        if self.memory_settings is None:
            return None
        from rwkvjax.memory.memory import SessionMemory
        rec = None
        if name not in (BASE, self.model_name) and self.store is not None:
            try:
                rec = self.store.get(name)
            except UnknownState:
                raise LookupError(unknown_model(name)) from None
        path = self.store.memory_file(rec) if rec is not None else None
        if path is None:
            mem, start = SessionMemory(self.memory_settings), 0
        else:
            mem = SessionMemory.load(path, private_copy=True)
            if mem.settings.vocab_size != self.config.vocab_size:
                from rwkvjax.errors import DataError
                raise DataError(f"{path}: the memory of state {rec.name!r} is for a {mem.settings.vocab_size}-id "
                                f"vocabulary, the model has {self.config.vocab_size}")
            start = read_upto(rec.source, prompt)
        mem.absorb(prompt[start:])
        return mem

    def model_list(self) -> list[tuple[str, float | None, dict]]:
        out = [(BASE, None, {"base_model": self.model_name})]
        if self.store is not None:
            for r in self.store.records():
                if r.base_hash == self.base_hash:
                    out.append((r.name, int(r.created), {"parent": r.parent, "state_id": r.id,
                                                         "memory": self.store.memory_file(r) is not None}))
        return out


def _warmup(server: Server, cfg, say) -> None:
    """Compile the engine's shapes, saying first how long that will take (with `say`) and keeping how long it took."""
    import jax

    from rwkvjax.serve import compile_time
    eng = server.engine
    verify = eng.memory and eng.draft_tokens > 0
    k = compile_time.key(jax.default_backend(), server.config, cfg.dtype, eng.max_batch, eng.prefill_chunk, verify)
    if say is not None:
        expect_s, how = compile_time.expected(k, server.config.n_layer,
                                              compile_time.shape_count(eng.max_batch, eng.prefill_chunk, verify))
        say(f"compiling the engine's shapes (about {expect_s:.0f} s, {how})...")
    took_s = eng.warmup()
    log.info("compiled the engine's shapes in %.1f s", took_s)
    if say is not None:  # the CLI's runs only: a library or test caller leaves the user's cache folder alone
        compile_time.record(k, took_s)


def serve(cfg, *, model=None, sock: socket.socket | None = None, ready: threading.Event | None = None,
          stop: threading.Event | None = None, say=None) -> None:
    """Run until interrupted (or `stop` is set). Binds cfg.host:cfg.port, or uses `sock` (tests).

    `say(line)`: where the progress lines go (the CLI prints them): "compiling … (about N s)…" before the warmup
    (`compile_time`: the last start's figure, else an estimate; the measured time is recorded for the next one),
    then "serving … on …" once the port accepts connections. A stop (SIGINT, SIGTERM, `stop`) drains: new requests
    get 503 and running ones `cfg.drain_s` seconds to finish before the engine ends each (`Engine.drain`)."""
    from rwkvjax.serve.access import AccessLog
    from rwkvjax.serve.app import build_app
    from rwkvjax.serve.guard import guarded
    from rwkvjax.serve.http import run_app
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach it can use the model", cfg.host)
    dashboard = None
    if cfg.dashboard:  # before the model loads, so a wrong folder fails at once
        from rwkvjax.serve.dashboard.app import build_dashboard
        dashboard = build_dashboard(cfg.dashboard, api_key=cfg.api_key)
    server = Server(cfg, model)
    if cfg.warmup:
        _warmup(server, cfg, say)
    server.engine.start()
    app = build_app(server)
    if dashboard is not None:
        app.mount("/dashboard", dashboard)
    outer = guarded(app, cfg.host, cfg.cors_origin)
    if cfg.access_log:
        outer = AccessLog(outer)
    accepting = threading.Event()
    port = sock.getsockname()[1] if sock is not None else cfg.port

    def announce():  # once uvicorn listens: a client reading the line can connect
        accepting.wait()
        if ready is not None:
            ready.set()
        if say is not None:
            say(f"serving {cfg.model} on http://{cfg.host}:{port}/v1 (Ctrl-C stops)")

    def on_stop():
        log.info("stopping: new requests get 503, running replies have %g s to finish (--drain-s)", cfg.drain_s)
        server.engine.drain(cfg.drain_s)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    try:
        run_app(outer, cfg.host, cfg.port, sock=sock, ready=accepting, stop=stop, on_stop=on_stop,
                drain_s=cfg.drain_s, read_timeout_s=cfg.read_timeout_s, max_connections=cfg.max_connections)
    finally:
        server.engine.stop()
        if server.tuner is not None:
            server.tuner.stop()
