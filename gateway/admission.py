"""Who may open a WebSocket besides a valid token: the page's origin, and how many at once.

- **Origin.** A browser sends ``Origin`` with every WebSocket handshake, and any web page
  may open a socket to any host, the developer's ``localhost`` included: without this check
  a page the developer visits could watch their gateway. A browser connection is accepted
  when its origin is the gateway's own (the ``Host`` it was reached by) or is listed in
  ``WEBSOCKET_ALLOWED_ORIGINS``. Clients that are not browsers send no ``Origin`` and are
  judged by their token alone.
- **Caps.** At most ``WEBSOCKET_MAX_CONNECTIONS_PER_USER`` connections per token and per
  client address at once, so one leaked token or one client cannot hold every socket.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from .auth import Refused


def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def check_origin(origin: str | None, host: str | None, allowed: Iterable[str]) -> None:
    """Refuse a browser connection from a foreign origin (see the module docstring)."""
    if origin is None:
        return
    key = _origin_key(origin)
    if key in {_origin_key(a) for a in allowed}:
        return
    try:
        netloc = urlsplit(key).netloc
    except ValueError:
        netloc = ""
    if host and netloc and netloc == host.strip().lower():
        return
    raise Refused("origin not allowed: add it to WEBSOCKET_ALLOWED_ORIGINS")


class ConnectionCaps:
    """Counts open connections per token and per client address; refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    @staticmethod
    def keys(token: str | None, address: str | None) -> tuple[str, ...]:
        # Tokens are counted by digest: the table must not hold usable credentials.
        keys = [f"addr:{address}"] if address else []
        if token:
            keys.append("token:" + hashlib.sha256(token.encode()).hexdigest())
        return tuple(keys)

    def admit(self, keys: tuple[str, ...]) -> None:
        """Count a new connection under ``keys``, or raise :class:`Refused` past the cap."""
        for key in keys:
            if self._open[key] >= self.limit:
                what = "this token" if key.startswith("token:") else "this client address"
                raise Refused(
                    f"too many connections for {what} "
                    f"(WEBSOCKET_MAX_CONNECTIONS_PER_USER={self.limit})"
                )
        self._open.update(keys)

    def release(self, keys: tuple[str, ...]) -> None:
        self._open.subtract(keys)
        for key in keys:
            if self._open[key] <= 0:
                del self._open[key]
