"""A web page the user visits cannot use the server or the dashboard on the user's loopback port: a POST body is
JSON only when it says so, a foreign `Host` (DNS rebinding) and a foreign `Origin` are refused, and only the origin
`--cors-origin` names gets CORS. Against real servers on 127.0.0.1 (tests/serve/conftest.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from rwkvjax.serve.guard import host_name, is_loopback
from tests.serve.conftest import running_server
from tests.serve.dashboard_util import get, running_dashboard
from tests.serve.test_dashboard_app import _run_folder

CHAT = json.dumps({"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
EVIL = "http://evil.example"


def _send(url: str, path: str, *, method="GET", body: bytes | None = None, headers=None):
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.3.0.1", True), ("localhost", True),
                                           ("::1", True), ("[::1]", True), ("evil.example", False),
                                           ("0.0.0.0", False), ("192.168.1.2", False)])
def test_loopback_names(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("header,name", [("127.0.0.1:8000", "127.0.0.1"), ("localhost", "localhost"),
                                         ("[::1]:8000", "::1"), ("evil.example:8000", "evil.example")])
def test_host_names(header, name):
    assert host_name(header) == name


def test_a_text_plain_post_is_refused_and_json_is_served(server):
    status, _, body = _send(server, "/v1/chat/completions", method="POST", body=CHAT,
                            headers={"Content-Type": "text/plain"})
    err = json.loads(body)["error"]
    assert status == 415 and "application/json" in err["message"] and err["code"] == "unsupported_media_type"
    assert _send(server, "/v1/completions", method="POST", body=CHAT)[0] == 415  # no Content-Type at all
    status, _, body = _send(server, "/v1/chat/completions", method="POST", body=CHAT,
                            headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and json.loads(body)["object"] == "chat.completion"


def test_a_foreign_host_is_refused(server):
    port = _port(server)
    for host in (f"evil.example:{port}", "evil.example", f"192.168.1.2:{port}"):
        status, _, body = _send(server, "/v1/models", headers={"Host": host})
        assert status == 421 and "localhost" in json.loads(body)["error"]["message"], host
        assert _send(server, "/v1/chat/completions", method="POST", body=CHAT,
                     headers={"Host": host, "Content-Type": "application/json"})[0] == 421
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert _send(server, "/v1/models", headers={"Host": host})[0] == 200, host


def test_a_foreign_origin_is_refused_and_the_own_one_served(server):
    c = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=120,
                      default_headers={"Origin": EVIL})
    with pytest.raises(openai.PermissionDeniedError, match="cors-origin"):
        c.chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.PermissionDeniedError):
        c.models.list()
    for origin in ("null", f"http://evil.example:{_port(server)}"):
        assert _send(server, "/v1/models", headers={"Origin": origin})[0] == 403
    status, headers, _ = _send(server, "/v1/chat/completions", method="OPTIONS",
                               headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert status == 403 and "access-control-allow-origin" not in headers
    own = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=120,
                        default_headers={"Origin": server})
    assert own.models.list().data[0].id == "base"


def test_cors_origin_is_the_one_foreign_origin_allowed(small_model):
    app_origin = "https://app.example"
    with running_server(small_model, cors_origin=app_origin) as url:
        status, headers, _ = _send(url, "/v1/chat/completions", method="OPTIONS",
                                   headers={"Origin": app_origin, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 200 and headers["access-control-allow-origin"] == app_origin
        assert "POST" in headers["access-control-allow-methods"]
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120,
                          default_headers={"Origin": app_origin})
        assert c.models.list().data[0].id == "base"
        status, headers, _ = _send(url, "/v1/models", headers={"Origin": app_origin})
        assert status == 200 and headers["access-control-allow-origin"] == app_origin
        # a body the route refuses passed the guard: the route, not the guard, answered
        status, _, body = _send(url, "/v1/chat/completions", method="POST", body=b'{"model": "base"}',
                                headers={"Origin": app_origin, "Content-Type": "application/json"})
        assert status == 400 and json.loads(body)["error"]["param"] == "messages"
        status, headers, _ = _send(url, "/v1/models", headers={"Origin": EVIL})
        assert status == 403 and "access-control-allow-origin" not in headers
        assert _send(url, "/v1/chat/completions", method="POST", body=CHAT,
                     headers={"Origin": app_origin, "Content-Type": "text/plain"})[0] == 415


def test_the_dashboard_refuses_foreign_hosts_and_origins_and_takes_the_servers_keys(tmp_path):
    run = _run_folder(tmp_path)
    with running_dashboard(run, api_key="s3cret") as url:
        port = _port(url)
        assert get(url + "/api/metrics", headers={"Host": f"evil.example:{port}", "x-api-key": "s3cret"})[0] == 421
        assert get(url + "/api/metrics", headers={"Origin": EVIL, "x-api-key": "s3cret"})[0] == 403
        assert get(url + "/", headers={"Origin": EVIL})[0] == 403
        # the server's key check: `Bearer` in any case, `x-api-key`; the page's `?key=` still works
        for headers in ({"Authorization": "bearer s3cret"}, {"Authorization": "BEARER s3cret"},
                        {"x-api-key": "s3cret"}):
            assert get(url + "/api/metrics", headers=headers)[0] == 200, headers
        assert get(url + "/api/metrics?key=s3cret")[0] == 200
        assert get(url + "/api/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(url + "/api/metrics?key=s3cre")[0] == 401
