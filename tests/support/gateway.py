"""A real gateway for tests: ``gateway.app.serve`` (uvicorn) on a free loopback port, in the
test's own loop, and the client-side helpers that talk to it.

The fixtures (``gateway_settings``, ``start_gateway``, ``gateway``) reach every folder
through ``tests/conftest.py``.
"""

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

from .ports import free_port
from .waits import wait_healthy

JWT_SECRET = "gateway-test-secret-0123456789abcdef"
API_KEY = "producer-key-0123456789"
ADMIN_KEY = "admin-key-0123456789abcdef"


@dataclass
class Gateway:
    """A running gateway: its port, the event that stops it, and its serving task."""

    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, **params: str) -> str:
        """The WebSocket endpoint's URL, with ``params`` as its query (if any)."""
        url = f"ws://127.0.0.1:{self.port}/ws/notifications"
        return f"{url}?{httpx.QueryParams(params)}" if params else url

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.http}/ws/status")).json()  # type: ignore[no-any-return]


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    """The test's settings with JWT auth on, signed with ``JWT_SECRET``, and ``API_KEY``."""
    return settings.model_copy(
        update={
            "websocket_jwt_secret": SecretStr(JWT_SECRET),
            "producer_api_key": SecretStr(API_KEY),
            "websocket_auth": "jwt",
        }
    )


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
async def gateway(start_gateway: StartGateway, gateway_settings: Settings) -> Gateway:
    """One gateway with ``gateway_settings``."""
    return await start_gateway(gateway_settings)


def token(*, user_id: str | None = None, jobs: tuple[str, ...] = (), ttl_s: int = 600) -> str:
    """A token for ``gateway_settings``'s secret."""
    return mint_token(JWT_SECRET, user_id=user_id, job_ids=list(jobs), ttl_s=ttl_s)


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
