"""What one client can make the server do is bounded: a body over `--max-body-mb` is refused while it is read
(its Content-Length, or its bytes as they arrive), a body that stalls gets 408 and headers that stall get the
connection closed (`--read-timeout-s`), the prompt is parsed and tokenized off the event loop (`/health` answers
meanwhile), and `max_tokens` has a ceiling (`--max-tokens-cap`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from rwkvjax.errors import ConfigError
from rwkvjax.serve.config import ServeConfig
from rwkvjax.serve.requests import BadRequest, Completion
from rwkvjax.text.tokenizer import ByteTokenizer
from tests.serve.conftest import running_server

BOUND_S = 60  # no wait in these tests lasts longer; the readiness signals come far sooner
PIECE = 64 * 1024
READ_TIMEOUT_S = 2.0
STALL_S = READ_TIMEOUT_S + 10  # a stalled client is answered or closed by then (the margin: a busy machine)


def _raw(url: str, data: bytes, timeout: float) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.sendall(data)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _headers(length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{size}\r\n"
            "\r\n").encode()


@pytest.fixture(scope="module")
def limited(small_model):
    with running_server(small_model, max_body_mb=0.25, read_timeout_s=READ_TIMEOUT_S, max_tokens=16,
                        max_tokens_cap=32) as url:
        yield url


def test_a_declared_length_over_the_limit_is_413_before_any_byte_is_read(limited):
    t0 = time.monotonic()
    s = _raw(limited, _headers(10**9), timeout=BOUND_S)  # a gigabyte announced, nothing sent
    reply = _read_all(s)  # the server answers and closes without waiting for the body
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request_too_large" in reply and time.monotonic() - t0 < BOUND_S


def test_a_body_is_refused_as_soon_as_it_passes_the_limit(small_model):
    """Driven in process, with a body that counts what the server pulls: the reader stops at the limit."""
    from rwkvjax.serve.app import build_app
    from rwkvjax.serve.server import Server
    server = Server(ServeConfig(model="small-test-model", warmup=False, max_body_mb=0.25, memory=False),
                    small_model)
    app = build_app(server)
    pulled, sent = [0], []
    pieces = 1000  # 64 MB offered, chunked (no Content-Length to refuse it by)

    async def receive():
        if pulled[0] >= pieces * PIECE:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled[0] += PIECE
        return {"type": "http.request", "body": b" " * PIECE, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), BOUND_S))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]  # the rest of the body is not read as a next request
    assert pulled[0] <= server.max_body_bytes + PIECE  # the limit plus the piece that passed it, not 64 MB


def test_a_stalled_body_is_408_and_stalled_headers_are_closed(limited):
    t0 = time.monotonic()
    s = _raw(limited, _headers(100) + b'{"model": ', timeout=BOUND_S)  # 10 of 100 bytes, then nothing
    reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request_timeout" in reply and time.monotonic() - t0 < STALL_S
    t0 = time.monotonic()
    s = _raw(limited, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=BOUND_S)
    assert _read_all(s) == b""  # closed (no request exists to answer) by the read timeout
    assert time.monotonic() - t0 < STALL_S


def test_max_tokens_above_the_ceiling_is_400_naming_it(limited):
    c = openai.OpenAI(base_url=limited + "/v1", api_key="x", max_retries=0, timeout=BOUND_S)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="base", prompt="x", max_tokens=33)
    assert e.value.body["param"] == "max_tokens" and "32" in e.value.body["message"]
    ok = Completion.parse({"model": "base", "prompt": "x", "max_tokens": 32}, default_max_tokens=16,
                          max_tokens_cap=32)
    assert ok.sampling.max_tokens == 32
    with pytest.raises(BadRequest) as bad:
        Completion.parse({"model": "base", "prompt": "x"}, default_max_tokens=64, max_tokens_cap=32)
    assert bad.value.param == "max_tokens"
    with pytest.raises(ConfigError, match="max-tokens-cap"):
        ServeConfig(max_tokens=300, max_tokens_cap=256)


class _HeldTokenizer(ByteTokenizer):
    """Holds the tokenization of a prompt containing HOLD until released: a prompt that takes long to prepare."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, text: str) -> list[int]:
        if "HOLD" in text:
            self.entered.set()
            self.release.wait(BOUND_S)
        return super().encode(text)


def test_health_answers_while_a_prompt_is_being_prepared(small_model):
    tok = _HeldTokenizer()
    model = dataclasses.replace(small_model, tokenizer=tok)
    with running_server(model, max_prompt_tokens=64, memory=False) as url:
        result = {}

        def post():
            body = json.dumps({"model": "base", "prompt": "HOLD " + "x" * 200, "max_tokens": 1}).encode()
            req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=BOUND_S * 2)
            except urllib.error.HTTPError as e:
                result["status"], result["body"] = e.code, json.loads(e.read())

        t = threading.Thread(target=post, daemon=True)
        t.start()
        try:
            assert tok.entered.wait(BOUND_S)  # the request is in its tokenization, and stays there
            t0 = time.monotonic()
            with urllib.request.urlopen(url + "/health", timeout=10) as r:
                assert json.loads(r.read())["status"] == "ok"
            assert time.monotonic() - t0 < 10
            assert not tok.release.is_set() and t.is_alive()  # answered while the prompt was still held
        finally:
            tok.release.set()
        t.join(BOUND_S)
        assert result["status"] == 413 and result["body"]["error"]["code"] == "context_length_exceeded"


def test_loaded_start_states_are_bounded(small_model, tmp_path, monkeypatch):
    """Every --ttt conversation is a state: the server keeps only the most recently used ones loaded."""
    import numpy as np

    from rwkvjax.io.states import StateStore
    from rwkvjax.model.params import params_hash
    from rwkvjax.serve import server as server_mod
    from rwkvjax.text.tokenizer import tokenizer_id
    arch = small_model.arch
    store = StateStore(tmp_path / "states")
    for i in range(5):
        store.put(f"s{i}", np.full((arch.n_layer, arch.n_head, arch.head_size, arch.head_size), i, np.float32),
                  base_hash=params_hash(small_model.params), tokenizer=tokenizer_id(small_model.tokenizer))
    monkeypatch.setattr(server_mod, "LOADED_STATES", 3)
    server = server_mod.Server(ServeConfig(model="small-test-model", states=str(tmp_path / "states"),
                                           warmup=False, memory=False), small_model)
    for name in ("s0", "s1", "s2", "s0", "s3", "s4"):
        server.start_state(name)
    assert [server._states[k][0][0] for k in server._states] == [store.get(n).id for n in ("s0", "s3", "s4")]
