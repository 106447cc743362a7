"""`python cli.py serve`: the model, its tokenizer, the engine and the named states behind the HTTP app.

With the session memory on (the default), every request samples from the mixture of the model and a scratch
memory of its own: a copy-on-write mapping of the memory stored with the state its `model` names (nothing it
learns reaches the file or any other request), or an empty one for `base` and states without a memory. The
prompt is absorbed into it; the reply is learned token by token. Only a `--ttt` conversation keeps its
memory: stored with the conversation's state `conv/<model>/<session>` after each turn.
"""

from __future__ import annotations

import logging
import socket
import threading

import jax.numpy as jnp

from rwkvjax.io.states import BASE, StateStore, UnknownState, conversation_name
from rwkvjax.model.state import State, start_state, zero_state
from rwkvjax.serve.mixture import read_upto

log = logging.getLogger(__name__)


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
        from rwkvjax.serve.config import draft_tokens_of
        self.draft_tokens = draft_tokens_of(cfg)
        self.memory_settings = None
        if cfg.memory:
            from rwkvjax.memory.memory import MemorySettings
            self.memory_settings = MemorySettings.for_vocab(self.config.vocab_size, cfg.memory_mb)
        self.engine = Engine(self.params, self.config, self.tokenizer, max_batch=cfg.max_batch,
                             max_waiting=cfg.max_waiting, prefill_chunk=cfg.prefill_chunk,
                             cache_bytes=cfg.cache_mb << 20, memory=cfg.memory, draft_tokens=self.draft_tokens)
        self._states: dict[str, tuple[tuple, State]] = {}
        self._lock = threading.Lock()
        self.tuner = None
        if cfg.ttt:  # the learner takes the stacked weights (the engine decodes on the per-layer copy)
            from rwkvjax.serve.ttt import ConversationTuner, TTTSettings
            self.tuner = ConversationTuner(self.config, params, self.tokenizer, StateStore(cfg.states),
                                           base_hash=self.base_hash, tokenizer_id=self.tok_id,
                                           settings=TTTSettings(steps=cfg.ttt_steps, lr=cfg.ttt_lr))

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
                return hit[1], f"{rec.id}@{rec.created}"
        rec, arrays = self.store.load(rec.id, base_hash=self.base_hash, tokenizer=self.tok_id)
        st = start_state(jnp.asarray(arrays["wkv"]), 1, att_shift_LC=arrays.get("att_shift"),
                         ffn_shift_LC=arrays.get("ffn_shift"))
        with self._lock:
            self._states[rec.id] = (version, st)
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


def serve(cfg, *, model=None, sock: socket.socket | None = None, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    """Run until interrupted (or `stop` is set). Binds cfg.host:cfg.port, or uses `sock` (tests)."""
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
        log.info("compiled the engine's shapes in %.1f s", server.engine.warmup())
    server.engine.start()
    app = build_app(server)
    if dashboard is not None:
        app.mount("/dashboard", dashboard)
    try:
        run_app(guarded(app, cfg.host, cfg.cors_origin), cfg.host, cfg.port, sock=sock, ready=ready, stop=stop)
    finally:
        server.engine.stop()
        if server.tuner is not None:
            server.tuner.stop()
