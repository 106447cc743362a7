"""A bound uvicorn lacks: the time a connection may take to send its request headers.

uvicorn closes a kept-alive connection that stays idle (`timeout_keep_alive`), but a new connection, or a kept-alive
one that has sent one byte of its next request, may take forever over its headers: a thousand such clients hold a
thousand connections. This protocol gives the headers of every request a deadline from the moment the server can
read them (the connection made, or the previous response sent); a request whose headers are still incomplete then
has its connection closed (no response can be sent before a request exists). The body has its own bound, per
piece, in `serve.requests.read_body` (a 408).
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_BYTES = 16 * 1024  # uvicorn's h11 limit on the header block, made explicit: a longer one is a 400
KEEP_ALIVE_S = 5          # an idle kept-alive connection is closed after this (uvicorn's default, made explicit)


def header_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline of `timeout_s` on every request's headers."""
    return type("HeaderDeadlineProtocol", (_HeaderDeadline,), {"header_timeout_s": float(timeout_s)})


class _HeaderDeadline(H11Protocol):
    header_timeout_s: float = 15.0
    _deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same time for its headers

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        # IDLE: no request of this cycle has complete headers yet (a request being answered is SEND_BODY or DONE)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
