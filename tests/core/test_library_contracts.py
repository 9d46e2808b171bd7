"""Fences: the library internals we reach into still exist under the names we use.

``bookgen_events.connection`` checks connections in and out of redis-py's pool itself and
writes on them with ``_send_packed_command``; ``gateway.protocol`` subclasses uvicorn's
sans-I/O WebSocket protocol and uses its state. Both libraries are pinned in pyproject.toml
(redis to its major version, uvicorn, a 0.x, to its minor series); an upgrade past a pin
that renames one of these must fail here, loudly, not in production.
(``gateway.headers_timeout``'s fence is in ``tests/gateway/test_hardening.py``.)
"""

from __future__ import annotations

import asyncio
import inspect
import re

import redis
import redis.utils
import uvicorn
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.commands.core import AsyncScript
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

from bookgen_events.connection import LeanPool


def test_the_pinned_versions_are_the_ones_installed() -> None:
    """The contract below was read off these versions (pyproject.toml pins them)."""
    assert redis.__version__.split(".")[0] == "8", redis.__version__
    assert re.match(r"0\.54\.", uvicorn.__version__), uvicorn.__version__


async def test_redis_pys_pool_internals_the_lean_pool_uses_exist() -> None:
    """LeanPool takes and gives back connections through the pool's lock and private lists."""
    pool = LeanPool.from_url("redis://127.0.0.1:1/0")
    assert callable(ConnectionPool.get_available_connection)
    assert isinstance(pool._lock, asyncio.Lock)
    assert isinstance(pool._available_connections, list)
    assert isinstance(pool._in_use_connections, set)
    conn = await pool.take()  # no connect: the checkout itself never does I/O
    assert pool._in_use_connections == {conn} and pool._available_connections == []
    pool.give_back(conn)
    assert pool._in_use_connections == set() and pool._available_connections == [conn]
    async with pool._lock:  # a release() in progress: take() waits for it
        waiting = asyncio.create_task(pool.take())
        await asyncio.sleep(0.01)
        assert not waiting.done()
    assert await waiting is conn
    await pool.aclose()


def test_redis_pys_connection_internals_the_exchange_uses_exist() -> None:
    """The lean exchange writes with _send_packed_command (no wait_for task) and reads raw."""
    assert inspect.iscoroutinefunction(AbstractConnection._send_packed_command)
    for name in ("send_packed_command", "read_response", "connect", "disconnect"):
        assert inspect.iscoroutinefunction(getattr(AbstractConnection, name)), name
    assert callable(AbstractConnection.pack_command)
    assert "nowait" in inspect.signature(AbstractConnection.disconnect).parameters
    assert isinstance(AbstractConnection.is_connected, property)
    assert "self.socket_timeout = " in inspect.getsource(AbstractConnection.__init__)
    script_source = inspect.getsource(AsyncScript)  # run_script_many sends .sha, loads .script
    assert "self.sha = " in script_source and "self.script = " in script_source
    assert redis.utils.DEFAULT_RESP_VERSION in (2, 3)


def test_the_uvicorn_protocol_state_gateway_protocol_uses_exists() -> None:
    """FramedWebSocketProtocol overrides two hooks and reads the protocol's state by name."""
    for name in ("handle_connect", "data_received", "stop_keepalive", "connection_made"):
        assert callable(getattr(WebSocketsSansIOProtocol, name, None)), name
    source = inspect.getsource(WebSocketsSansIOProtocol)
    for attr in ("conn", "handshake_initiated", "handshake_complete", "close_sent",
                 "disconnected", "writable", "transport", "queue", "read_paused",
                 "close_timer", "loop", "scope"):  # fmt: skip
        assert re.search(rf"self\.{attr}\b\s*(:[^=\n]+)?=", source), attr
    for name in ("send_close", "data_to_send"):  # the sans-I/O connection behind .conn
        assert callable(getattr(ServerProtocol, name, None)), name
    assert "handshake_exc" in inspect.getsource(ServerProtocol)
