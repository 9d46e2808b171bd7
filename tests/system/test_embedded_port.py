"""A restart of the embedded server must come back on the port it was asked for."""

from __future__ import annotations

from pathlib import Path

import redis

from bookgen_events.embedded import EmbeddedRedis
from tests.support.ports import free_port


def test_embedded_redis_restarts_on_the_port_it_was_given(tmp_path: Path) -> None:
    """Stopped with a client connected and started again, the server listens on the same port."""
    port = free_port()
    server = EmbeddedRedis(tmp_path, port=port)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.ping()  # the server closes this connection first: TIME_WAIT on its port
        server.stop()
        client.close()
        server.start()
        assert server.port == port
    finally:
        server.stop()
