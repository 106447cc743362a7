"""What `cli.py serve` says on its own stdout and stderr, read from a real process on 127.0.0.1: "compiling (about
N s)..." before the warmup and "serving ... on" only once the port accepts; one access-log line per request (never
the body or the key); a client that goes away mid-upload or mid-stream is one line, not tracebacks."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest

from rwkvjax.cli import build_parser
from rwkvjax.cli.flags import dataclass_from_args
from rwkvjax.serve import compile_time
from rwkvjax.serve.access import printable
from rwkvjax.serve.config import ServeConfig
from tests.serve.conftest import running_server
from tests.serve.serve_process import ServeProcess, never_ending_model_file
from tests.serve.test_server import client

KEY = "k3y-that-must-not-be-logged"
PROMPT = "a prompt that must not be logged"
LINE_S = 120  # a line the server writes when a request ends, on a busy machine


@pytest.fixture(scope="module")
def served(small_model, tmp_path_factory):
    """(the process, whether a connection succeeded right after the "serving" line was read)."""
    tmp = tmp_path_factory.mktemp("served")
    p = ServeProcess(never_ending_model_file(small_model, tmp), tmp / "cache", "--api-key", KEY, "--no-memory")
    try:
        p.serving()
        try:  # at once: before the change, the line came before the model was even loaded
            socket.create_connection(("127.0.0.1", p.port), timeout=10).close()
            accepted = True
        except OSError:
            accepted = False
        yield p, accepted
    finally:
        p.stop()


def _access(p: ServeProcess, pattern: str) -> str:
    return p.wait_line(r"rwkvjax\.serve\.access: " + pattern, LINE_S, "err")[1]


def _raw(p: ServeProcess, request: bytes) -> tuple[int, bytes]:
    """(the client's port, the whole response) of one request on its own connection."""
    with socket.create_connection(("127.0.0.1", p.port), timeout=120) as s:
        s.sendall(request)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return s.getsockname()[1], got


def _barrier(p: ServeProcess) -> None:
    """One request whose access line is waited for: whatever the server had to say about earlier ones is said."""
    port, _ = _raw(p, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    _access(p, rf'127\.0\.0\.1:{port} "GET /health" 200 ')


def _post_head(p: ServeProcess, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\nContent-Type: application/json\r\n"
            f"x-api-key: {KEY}\r\nContent-Length: {length}\r\n\r\n").encode()


def test_compiling_is_said_first_and_serving_only_once_the_port_accepts(served):
    p, accepted = served
    out = [t for _, n, t in p.lines if n == "out"]
    compiling = [i for i, t in enumerate(out) if re.match(r"compiling .*\(about \d+ s, estimated .*\)\.\.\.$", t)]
    serving = [i for i, t in enumerate(out) if t.startswith("serving ")]
    assert compiling and serving and compiling[0] < serving[0], out
    assert accepted, "the 'serving' line came before the port accepted a connection"
    # the warmup's measured time is kept for the next start's announcement
    recorded = json.loads((p.cache / "rwkvjax" / "compile_times.json").read_text())
    assert len(recorded) == 1 and list(recorded.values())[0] > 0


def test_the_compile_time_is_the_recorded_one_else_an_estimate(tmp_path):
    f = tmp_path / "times.json"
    shapes = compile_time.shape_count(64, 256, True)
    assert shapes == compile_time.REFERENCE_SHAPES
    seconds, how = compile_time.expected("k", compile_time.REFERENCE_LAYERS, shapes, f)
    assert seconds == compile_time.REFERENCE_S and "estimated" in how
    assert compile_time.expected("k", 12, shapes, f)[0] == compile_time.REFERENCE_S / 2  # half the layers
    compile_time.record("k", 12.34, f)
    assert compile_time.expected("k", 12, shapes, f) == (12.3, "as the last start with these settings")
    assert "estimated" in compile_time.expected("other", 12, shapes, f)[1]
    f.write_text("{not json")  # a damaged record is estimated over, then replaced
    assert "estimated" in compile_time.expected("k", 12, shapes, f)[1]
    compile_time.record("k", 5.0, f)
    assert compile_time.expected("k", 12, shapes, f)[0] == 5.0


def test_one_access_line_per_request_without_body_or_key(served):
    p, _ = served
    c = client(p.url, api_key=KEY)
    assert c.models.list().data[0].id == "base"
    r = c.completions.create(model="base", prompt=PROMPT, max_tokens=5, temperature=0)
    chunks = list(c.chat.completions.create(model="base", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=4, temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    refused, _ = _raw(p, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    models = _access(p, r'127\.0\.0\.1:\d+ "GET /v1/models" 200 \d+ ms$')
    completion = _access(p, rf'\S+ "POST /v1/completions" 200 \d+ ms tokens {r.usage.prompt_tokens}/5$')
    stream = _access(p, r'\S+ "POST /v1/chat/completions" 200 \d+ ms tokens \d+/4$')
    _access(p, rf'127\.0\.0\.1:{refused} "GET /v1/models" 401 \d+ ms$')
    _barrier(p)
    err = p.text("err")
    for line in (models, completion, stream):
        assert err.count(line) == 1  # one line per request
    assert len(re.findall(r'"POST /v1/completions"', err)) == 1
    assert KEY not in err and PROMPT not in err and "must not be logged" not in p.text()


def test_a_client_gone_mid_upload_is_one_line(served):
    p, _ = served
    body = json.dumps({"model": "base", "messages": [{"role": "user", "content": "x" * 2000}]}).encode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=60) as s:
        s.sendall(_post_head(p, "/v1/chat/completions", len(body)) + body[:len(body) // 2])
        port = s.getsockname()[1]
    line = p.wait_line(rf"client 127\.0\.0\.1:{port} disconnected during upload of POST /v1/chat/completions$",
                       LINE_S, "err")[1]
    _barrier(p)
    err = p.text("err")
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-3000:]
    assert [t for t in err.splitlines() if f"127.0.0.1:{port}" in t] == [line]


def test_a_client_gone_mid_stream_is_one_line(served):
    p, _ = served
    body = json.dumps({"model": "base", "prompt": "go", "max_tokens": 2000, "temperature": 0,
                       "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=120) as s:
        s.sendall(_post_head(p, "/v1/completions", len(body)) + body)
        port = s.getsockname()[1]
        got = b""
        while b"data: {" not in got:  # the first chunk: the generation is running
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
    line = _access(p, rf'127\.0\.0\.1:{port} "POST /v1/completions" 200 \d+ ms tokens 2/\d+$')
    _barrier(p)
    err = p.text("err")
    assert "Traceback" not in err and "Exception in ASGI" not in err, err[-3000:]
    assert [t for t in err.splitlines() if f"127.0.0.1:{port}" in t] == [line]


def test_no_access_log_turns_it_off(small_model, caplog):
    assert dataclass_from_args(ServeConfig, build_parser(["serve", "--no-access-log"]).parse_args(
        ["serve", "--no-access-log"])).access_log is False
    assert ServeConfig().access_log is True
    for on in (True, False):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rwkvjax.serve.access"), \
                running_server(small_model, access_log=on) as url:
            assert client(url).models.list().data[0].id == "base"
        lines = [r.getMessage() for r in caplog.records if r.name == "rwkvjax.serve.access"]
        assert [bool(re.search(r'"GET /v1/models" 200 \d+ ms$', m)) for m in lines] == ([True] if on else []), lines


def test_a_logged_path_stays_one_line():
    assert printable('/v1/x\n127.0.0.1:1 "GET /" 200') == '/v1/x\\x0a127.0.0.1:1 \\x22GET /\\x22 200'
    assert printable("/" + "a" * 500).endswith("...") and len(printable("/" + "a" * 500)) == 203
