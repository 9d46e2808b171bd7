"""Gateway fixtures: a real uvicorn server (our ``serve``) on a free loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection

from bookgen_events import EventBus, Settings
from gateway.app import serve
from gateway.auth import mint_token

from ..helpers import free_port, wait_healthy

SECRET = "gateway-test-secret-0123456789abcdef"
API_KEY = "producer-key-0123456789"


@dataclass
class Gateway:
    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, **params: str) -> str:
        query = str(httpx.QueryParams(params))
        return f"ws://127.0.0.1:{self.port}/ws/notifications?{query}"

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.http}/ws/status")).json()  # type: ignore[no-any-return]


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "websocket_jwt_secret": SecretStr(SECRET),
            "producer_api_key": SecretStr(API_KEY),
            "websocket_auth": "jwt",
        }
    )


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(bus: EventBus) -> AsyncIterator[StartGateway]:
    """Start ``serve`` in this loop; every gateway started is stopped at teardown."""
    started: list[Gateway] = []

    async def start(settings: Settings, *, port: int | None = None, **options: Any) -> Gateway:
        port = port or free_port()
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(bus, settings, stop, host="127.0.0.1", port=port, **options)
        )
        gateway = Gateway(port, stop, task)
        started.append(gateway)
        await wait_healthy(gateway.http)
        return gateway

    yield start
    for gateway in started:
        gateway.stop.set()
    await asyncio.gather(*(g.task for g in started), return_exceptions=True)


@pytest.fixture
async def gateway(start_gateway: StartGateway, gw_settings: Settings) -> Gateway:
    return await start_gateway(gw_settings)


def token(*, user_id: str | None = None, jobs: tuple[str, ...] = (), ttl_s: int = 600) -> str:
    return mint_token(SECRET, user_id=user_id, job_ids=list(jobs), ttl_s=ttl_s)


async def recv_json(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), within))  # type: ignore[no-any-return]


async def recv_until(
    ws: ClientConnection, last_id: str, within: float = 10.0
) -> list[dict[str, Any]]:
    """Messages up to and including the one with stream id ``last_id``."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while not got or got[-1].get("id") != last_id:
            got.append(json.loads(await ws.recv()))
    return got


def progress(job_id: str | None, pct: float = 50.0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "progress_update",
        "job_id": job_id,
        "data": {"progress": pct, "phase": f"phase {pct}"},
        **extra,
    }
