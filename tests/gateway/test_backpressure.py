"""Slow clients, keep-alive and shutdown: nobody's socket delays anybody else's."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bookgen_events import EventBus, Settings
from tests.support.events import live_progress
from tests.support.gateway import Gateway, StartGateway, recv_json, recv_until, token


def _stalling_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that stops reading stalls fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_slow_client_is_closed_with_1013_while_fast_one_gets_everything(
    start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """A client that stops reading overflows its bounded queue and is closed 1013; others are unaffected."""
    gateway = await start_gateway(gateway_settings.model_copy(update={"websocket_queue_size": 8}))
    url = gateway.ws(job_id="s", token=token(jobs=("s",)))
    big = "x" * 40_000
    got: list[dict[str, object]] = []
    async with (
        connect(url, max_size=None) as fast,
        connect(url, max_size=None, max_queue=1, sock=_stalling_socket(gateway.port)) as slow,
    ):
        ids: list[str] = []
        for _ in range(60):  # 300 x 40 KB, more than the socket buffers can hide
            batch = [live_progress("s", 1, data={"progress": 1, "message": big}) for _ in range(5)]
            ids += await bus.emit_many(batch)
            # The fast client keeps up (this test shares one loop with the gateway).
            got += await recv_until(fast, ids[-1], within=10)
        assert [m["id"] for m in got] == ids
        assert (await gateway.status())["connections"]["total_job_connections"] == 1

        received = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
                received += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert 0 < received < len(ids)


async def test_unanswered_pings_close_the_connection(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """A peer that never answers the server's ping is closed after the pong timeout (1011)."""
    gateway = await start_gateway(gateway_settings, ping_interval=0.2, ping_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = gateway.ws(job_id="k", token=token(jobs=("k",))).split(str(gateway.port), 1)[1]
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = await asyncio.wait_for(reader.read(), 5)  # until the server closes the socket
    writer.close()
    assert data.startswith(b"HTTP/1.1 101")
    assert b"\x03\xf3keepalive ping timeout" in data  # close frame: 1011 + reason
    assert (await gateway.status())["connections"]["total_job_connections"] == 0


async def test_answering_clients_survive_many_ping_intervals(
    start_gateway: StartGateway, gateway_settings: Settings, bus: EventBus
) -> None:
    """A normal client answers pings and keeps receiving."""
    gateway = await start_gateway(gateway_settings, ping_interval=0.1, ping_timeout=0.3)
    async with connect(gateway.ws(job_id="k", token=token(jobs=("k",)))) as ws:
        await asyncio.sleep(1.0)  # ten ping intervals
        stream_id = await bus.emit(live_progress("k"))
        assert (await recv_json(ws))["id"] == stream_id


async def test_stop_closes_websockets_with_1001(
    start_gateway: StartGateway, gateway_settings: Settings
) -> None:
    """Setting stop (SIGTERM in the runner) closes every WebSocket with 1001 and returns."""
    gateway: Gateway = await start_gateway(gateway_settings)
    async with connect(gateway.ws(job_id="z", token=token(jobs=("z",)))) as ws:
        gateway.stop.set()
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
        await asyncio.wait_for(gateway.task, 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
