"""uvicorn's HTTP protocol with header and body read deadlines, for both apps.

uvicorn closes idle keep-alive connections but has no deadline for a client that connects
and then sends its request headers or its body slowly, or not at all: a thousand such
connections stayed open indefinitely. ``GuardedHttpToolsProtocol`` is uvicorn's httptools
protocol (the fast one it picks by default) that notes when each connection started
waiting for a request's headers (on connect, and when a request begins) and for its body
(once the headers are complete). A sweep once a second answers 408 and closes every
connection that has waited longer than its deadline; the request path pays two attribute
writes, no timers.

Deadlines: ``DRIFTLOOP_HTTP_HEADER_TIMEOUT_SECONDS`` and
``DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS`` (kernel/settings.py), read once per process when the
first connection opens. Use it with ``uvicorn.run(..., http=HTTP_PROTOCOL)``. An app whose
body read is cut off sees the client disconnect (``kernel.httpbody`` turns that into
``BodyTooSlow``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

HTTP_PROTOCOL = "kernel.httpserver:GuardedHttpToolsProtocol"
SWEEP_SECONDS = 1.0
_TIMEOUT_BODY = b'{"detail":"request not received within the time limit"}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: " + str(len(_TIMEOUT_BODY)).encode()
                     + b"\r\n\r\n" + _TIMEOUT_BODY)
_swept_loops: set[int] = set()


@functools.cache
def deadlines() -> tuple[float, float]:
    """(header, body) deadlines in seconds, from the settings."""
    from kernel.settings import CommonSettings

    settings = CommonSettings()
    return settings.http_header_timeout_seconds, settings.http_body_timeout_seconds


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline on each request's headers and body."""

    _waiting_since: float | None = None
    _deadline = 0.0

    def _wait(self, deadline: float) -> None:
        self._waiting_since, self._deadline = self.loop.time(), deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if id(self.loop) not in _swept_loops:
            _swept_loops.add(id(self.loop))
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.connections)
        self._wait(deadlines()[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting_since = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._wait(deadlines()[0])

    def on_headers_complete(self) -> None:
        self._wait(deadlines()[1])
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._waiting_since = None
        super().on_message_complete()

    def too_slow(self, now: float) -> bool:
        return self._waiting_since is not None and now - self._waiting_since > self._deadline

    def cut_off(self) -> None:
        self._waiting_since = None
        if not self.transport.is_closing():
            log.info("closing a connection from %s: request not received within %.0f s",
                     self.client, self._deadline)
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Cut off every connection past its deadline, then run again in a second."""
    now = loop.time()
    for connection in list(connections):
        if isinstance(connection, GuardedHttpToolsProtocol) and connection.too_slow(now):
            connection.cut_off()
    loop.call_later(SWEEP_SECONDS, _sweep, loop, connections)
