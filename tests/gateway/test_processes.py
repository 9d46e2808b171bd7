"""Real ``bookgen-events gateway`` processes: every replica delivers every event; SIGTERM -> 1001."""

from __future__ import annotations

import asyncio
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bookgen_events import EventBus
from gateway.auth import verify_token
from tests.support.events import live_progress
from tests.support.gateway import JWT_SECRET, recv_until
from tests.support.ports import free_port
from tests.support.processes import CLI
from tests.support.waits import wait_healthy


async def test_two_gateway_processes_both_deliver_every_event(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """Broadcast reads, not a consumer group: each replica's client gets all events, in order."""
    env = {**cli_env, "WEBSOCKET_JWT_SECRET": JWT_SECRET}
    ports = [free_port(), free_port()]
    procs = [
        await asyncio.create_subprocess_exec(
            *CLI, "gateway", "--port", str(p), env=env, stderr=asyncio.subprocess.PIPE
        )
        for p in ports
    ]
    try:
        await asyncio.gather(*(wait_healthy(f"http://127.0.0.1:{p}", 20) for p in ports))
        minting = await asyncio.create_subprocess_exec(
            *CLI,
            "token",
            "--job-id",
            "multi",
            "--ttl",
            "60",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        tok = (await minting.communicate())[0].decode().strip()
        assert minting.returncode == 0
        assert verify_token(JWT_SECRET, tok).job_ids == {"multi"}
        urls = [f"ws://127.0.0.1:{p}/ws/notifications?job_id=multi&token={tok}" for p in ports]
        async with connect(urls[0]) as a, connect(urls[1]) as b:
            ids = [await bus.emit(live_progress("multi", i)) for i in range(50)]
            got_a, got_b = await asyncio.gather(recv_until(a, ids[-1]), recv_until(b, ids[-1]))
            assert [m["id"] for m in got_a] == ids
            assert [m["id"] for m in got_b] == ids
            procs[0].send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(a.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        _, log = await asyncio.wait_for(procs[0].communicate(), 15)
        assert procs[0].returncode == 0
        assert b"Traceback" not in log
        assert tok.encode() not in log and b"token=***" in log  # uvicorn's line, redacted
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.communicate(), 15)
