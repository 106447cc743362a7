"""A stop (SIGTERM, Ctrl-C) drains the server: new requests get 503, running replies get --drain-s seconds, then
each still running ends properly (a final chunk with finish_reason "length", then `data: [DONE]`; a complete JSON
answer), a request not yet started gets 503, and the process exits soon after the deadline. The engine's drain on
its own, then a real `cli.py serve` process on 127.0.0.1 that gets SIGTERM with generations in flight."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import signal
import socket
import threading
import time
import urllib.request

import openai
import pytest

from rwkvjax.model.params import unstack_layers
from rwkvjax.model.state import zero_state
from rwkvjax.serve.engine import SHUTDOWN_REASON, Engine, Request, Sampling, ShuttingDown
from rwkvjax.serve.http import CLOSE_MARGIN_S
from rwkvjax.text.tokenizer import ByteTokenizer
from tests.serve.conftest import SMALL
from tests.serve.serve_process import ServeProcess, never_ending_model_file
from tests.serve.test_server import client

DRAIN_S = 3.0
LONG = 50_000         # tokens no reply reaches before the deadline cuts it
EXIT_SLACK_S = 20.0   # the process's own teardown after the last connection closed, on a busy machine
WAIT_S = 300


class Events:
    """What the engine told one request; `first` once a piece of text came, `answered` at its end."""

    def __init__(self):
        self.events, self.first, self.answered = [], threading.Event(), threading.Event()

    def emit(self, kind, payload):
        self.events.append((kind, payload))
        if kind == "text":
            self.first.set()
        elif kind in ("done", "error", "unavailable"):
            self.answered.set()

    @property
    def end(self):
        return self.events[-1]


@pytest.fixture(scope="module")
def never_ends(small_model):
    params = small_model.params
    return dataclasses.replace(small_model, params=dataclasses.replace(params, head=params.head.at[:, 0].set(0.0)))


def _request(events: Events, max_tokens: int, prompt: bytes = b"def f(x):\n") -> Request:
    return Request(prompt=list(prompt), start=zero_state(SMALL, 1), start_key="base",
                   sampling=Sampling(max_tokens=max_tokens, temperature=0.0), emit=events.emit)


def test_the_engine_drain_lets_running_replies_finish_then_ends_the_rest(never_ends):
    engine = Engine(unstack_layers(never_ends.params), SMALL, ByteTokenizer(), max_batch=1)
    short, long_, queued = Events(), Events(), Events()
    engine.start()
    try:
        engine.submit(_request(short, 2000))  # long enough to be running when the drain begins
        assert short.first.wait(WAIT_S)
        engine.drain(WAIT_S)  # a deadline far off: what runs finishes as it would have
        with pytest.raises(ShuttingDown):
            engine.submit(_request(Events(), 4))
        assert short.answered.wait(WAIT_S)
        assert short.end == ("done", {"finish_reason": "length", "prompt_tokens": 10, "completion_tokens": 2000,
                                      "cached_tokens": 0})
        assert engine.stats()["draining"] is True
    finally:
        engine.stop()

    engine = Engine(unstack_layers(never_ends.params), SMALL, ByteTokenizer(), max_batch=1)
    engine.start()
    try:
        engine.submit(_request(long_, LONG))
        engine.submit(_request(queued, 4))  # max_batch 1: it waits behind the long one
        assert long_.first.wait(WAIT_S)
        engine.drain(0.0)
        assert long_.answered.wait(WAIT_S) and queued.answered.wait(WAIT_S)
        kind, done = long_.end
        assert kind == "done" and done["finish_reason"] == SHUTDOWN_REASON == "length"
        assert 0 < done["completion_tokens"] < LONG
        assert queued.end[0] == "unavailable" and "shutting down" in queued.end[1]
        assert [k for k, _ in queued.events] == ["unavailable"]
        assert engine.stats()["running"] == 0 and engine.errors == 0
    finally:
        engine.stop()


def _health(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "/health", timeout=60).read())


def _until(url: str, ready) -> None:
    """Polls /health until `ready(health)` (the engine's counters are the only sign of a non-stream request's
    progress a client has), for WAIT_S at most."""
    deadline = time.monotonic() + WAIT_S
    while not ready(h := _health(url)):
        assert time.monotonic() < deadline, h
        time.sleep(0.05)


def _post_head(port: int, path: str, length: int, version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def _read_all(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def test_sigterm_ends_every_reply_properly_and_exits_after_the_deadline(small_model, tmp_path):
    p = ServeProcess(never_ending_model_file(small_model, tmp_path), tmp_path / "cache", "--no-memory",
                     "--max-batch", "3", "--drain-s", str(DRAIN_S), "--max-tokens-cap", str(2 * LONG))
    try:
        p.serving()
        c = client(p.url)
        # 1. a raw SSE stream (to see its last lines), running once its first chunk came
        sse = socket.create_connection(("127.0.0.1", p.port), timeout=WAIT_S)
        body = json.dumps({"model": "base", "prompt": "one", "max_tokens": LONG, "temperature": 0,
                           "stream": True}).encode()
        # HTTP/1.0: the events come as they are, not in chunks of the transfer encoding
        sse.sendall(_post_head(p.port, "/v1/completions", len(body), "1.0") + body)
        head = b""
        while b"data: {" not in head:
            chunk = sse.recv(65536)
            assert chunk, head
            head += chunk
        chat_first = threading.Event()

        def chat():
            chunks = []
            for ch in c.chat.completions.create(model="base", messages=[{"role": "user", "content": "two"}],
                                                max_tokens=LONG, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
                chunks.append(ch)
                if ch.choices and ch.choices[0].delta.content:
                    chat_first.set()
            return chunks

        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            # 2. an openai chat stream, 3. a non-stream completion (both running), 4. one queued behind them
            chat_f = ex.submit(chat)
            assert chat_first.wait(WAIT_S)
            whole_f = ex.submit(c.completions.create, model="base", prompt="three", max_tokens=LONG, temperature=0)
            _until(p.url, lambda h: h["running"] == 3)
            queued_f = ex.submit(c.completions.create, model="base", prompt="four", max_tokens=4, temperature=0)
            _until(p.url, lambda h: h["running"] == 3 and h["waiting"] == 1)
            # 5. a request whose body is half sent when the stop comes: the rest arrives during the drain
            late = socket.create_connection(("127.0.0.1", p.port), timeout=WAIT_S)
            body = json.dumps({"model": "base", "prompt": "five", "max_tokens": 4}).encode()
            late.sendall(_post_head(p.port, "/v1/completions", len(body)) + body[:10])

            p.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            p.wait_line(r"stopping: new requests get 503", WAIT_S, "err")
            late.sendall(body[10:])
            answer = _read_all(late).decode()
            assert answer.startswith("HTTP/1.1 503 "), answer
            assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["code"] == "server_shutting_down"

            events = [e for e in (head + _read_all(sse)).decode().split("\n\n") if e.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            final = json.loads(events[-2][len("data: "):])
            assert final["choices"][0]["finish_reason"] == "length" and final["choices"][0]["text"] == ""

            chunks = chat_f.result(timeout=WAIT_S)
            assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
            assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens < LONG

            whole = whole_f.result(timeout=WAIT_S)
            assert whole.choices[0].finish_reason == "length" and whole.choices[0].text
            assert 0 < whole.usage.completion_tokens < LONG

            with pytest.raises(openai.InternalServerError) as e:
                queued_f.result(timeout=WAIT_S)
            assert e.value.status_code == 503 and e.value.body["code"] == "server_shutting_down"

        assert p.proc.wait(timeout=WAIT_S) == 143
        took = time.monotonic() - signalled
        assert took < DRAIN_S + CLOSE_MARGIN_S + EXIT_SLACK_S, took
        # nothing ended before the deadline: the replies were cut by it, not by anything earlier
        assert took >= DRAIN_S
        assert p.text("err").splitlines()[-1] == "terminated"
        assert "Traceback" not in p.text("err"), p.text("err")[-3000:]
    finally:
        p.stop()
