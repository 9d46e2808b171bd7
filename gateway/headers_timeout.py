"""uvicorn's httptools protocol plus a deadline on the request head (slowloris).

uvicorn closes a keep-alive connection that idles *between* requests, but nothing bounds a
connection that never sends a request, or trickles its headers a byte at a time: each holds
a socket and a file descriptor for as long as the client likes. Here the head of every
request (the first, and each later one on a kept-alive connection) must arrive whole within
``HTTP_HEADER_TIMEOUT`` seconds of its first byte (or of the connection), else the
connection is closed. Bodies and WebSockets are not affected: the clock stops once the
headers are in.

Subclasses a uvicorn internal: ``uvicorn`` is pinned to its minor series in pyproject.toml,
and ``tests/gateway/test_hardening.py`` fails loudly if the hooks used here are renamed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadersTimeoutProtocol(HttpToolsProtocol):
    """Closes connections whose request head is not complete ``header_timeout`` s in."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expire(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
