"""What every request to the server and the dashboard passes before a route sees it: the cross-site checks.

A web page the user visits can send requests to a port on the user's own machine. Three things keep it out:
- a POST body is JSON only when it says so (`Content-Type: application/json`): a page can send `text/plain`
  cross-site without asking, but not `application/json`, which makes the browser ask first (a preflight);
- bound to a loopback address, the server answers only loopback `Host` values: a page whose own name has been made
  to resolve to 127.0.0.1 (DNS rebinding) still sends its own name as `Host`;
- a request a browser marks with a foreign `Origin` is refused (bound to loopback), unless that origin is the one
  `--cors-origin` names, for which CORS preflights are answered and responses carry the CORS headers.
The API key check (`key_ok`) is here too, light to import, so the dashboard checks keys as the server does.
"""

from __future__ import annotations

import hmac
import ipaddress
import json

from starlette.middleware.cors import CORSMiddleware

LOOPBACK_NAMES = ("localhost",)


def key_ok(req, key: str | None) -> bool:
    """True without a key, or when the request carries it: `Authorization: <scheme> <key>` with the scheme `Bearer`
    in any case (RFC 7235: schemes are case-insensitive), or `x-api-key: <key>` (what some clients send). Compared
    in constant time, so the time of a refusal says nothing about how much of a guess was right."""
    if not key:
        return True
    want = key.encode()
    scheme, _, given = req.headers.get("authorization", "").strip().partition(" ")
    by_bearer = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), want)
    by_header = hmac.compare_digest(req.headers.get("x-api-key", "").strip().encode(), want)
    return by_bearer or by_header


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (`127.0.0.0/8`, `::1`, with or without brackets)."""
    host = host.strip().lower().strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a `Host` header (`[::1]:8000` -> `::1`, `localhost:8000` -> `localhost`)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def guarded(app, host: str, cors_origin: str | None = None):
    """`app` behind the cross-site checks, for a server bound to `host`; `cors_origin` (say
    `https://app.example`): the one foreign origin allowed, with CORS."""
    inner = app
    if cors_origin:
        inner = CORSMiddleware(app, allow_origins=[cors_origin.rstrip("/")], allow_methods=["GET", "POST"],
                               allow_headers=["authorization", "content-type", "x-api-key"], max_age=600)
    return SiteGuard(inner, loopback=is_loopback(host), cors_origin=cors_origin)


class SiteGuard:
    """Pure ASGI (it must see every request, including a CORS preflight, before any route or CORS answer)."""

    def __init__(self, app, *, loopback: bool, cors_origin: str | None = None):
        self.app, self.loopback = app, loopback
        self.cors_origin = cors_origin.rstrip("/") if cors_origin else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, message, code = refusal
                body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                             "code": code}}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, str] | None:
        """(status, message, code) when the request is refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.loopback and not is_loopback(host_name(host)):
            return (421, f"Host {host[:100]!r} is not this server's: it answers only localhost, 127.0.0.1 or [::1] "
                         "(it is bound to a loopback address)", "misdirected_request")
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") != self.cors_origin:
            own = origin.rstrip("/") == f"{scope.get('scheme', 'http')}://{host}"
            if self.loopback and not own:
                return (403, f"Origin {origin[:100]!r} may not use this server (a page of another site); start "
                             "it with --cors-origin ORIGIN to allow one", "forbidden_origin")
        if scope["method"] == "POST":
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return (415, f"the body must be JSON sent with 'Content-Type: application/json' (got "
                             f"{ctype[:60] or 'none'!r})", "unsupported_media_type")
        return None
