"""Fuzz fixtures: deterministic hypothesis profiles and a real gateway on a loopback port.

``FUZZ`` (the default run) is derandomized with few examples so the whole folder stays fast
and reproducible; ``FUZZ_SLOW`` explores more and backs the ``@pytest.mark.slow`` twins.
Profiles are applied per test (``@FUZZ``), never loaded globally, so other folders keep
whatever hypothesis settings they choose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from bookgen_events import EventBus, Settings
from gateway.app import serve
from tests.consumers.webhook_receiver import receiver, webhook_settings
from tests.helpers import free_port, wait_healthy

__all__ = ["receiver", "webhook_settings"]  # the real loopback webhook receiver's fixtures

# Examples share one Redis, gateway or consumer (function-scoped fixtures) on purpose:
# the property is that they keep working across every hostile input.
_COMMON: dict[str, object] = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("bookgen-fuzz", max_examples=60, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("bookgen-fuzz-slow", max_examples=400, **_COMMON)  # type: ignore[arg-type]
FUZZ = settings.get_profile("bookgen-fuzz")
FUZZ_SLOW = settings.get_profile("bookgen-fuzz-slow")

JWT_SECRET = "fuzz-jwt-secret-0123456789abcdef0123"
API_KEY = "fuzz-producer-key-0123456789"


@dataclass
class Gateway:
    """A running gateway: its base URLs."""

    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications"


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "websocket_jwt_secret": SecretStr(JWT_SECRET),
            "producer_api_key": SecretStr(API_KEY),
            "websocket_auth": "jwt",
        }
    )


@pytest.fixture
async def gateway(bus: EventBus, gateway_settings: Settings) -> AsyncIterator[Gateway]:
    """The real gateway (``gateway.app.serve``: uvicorn) on a free loopback port, in this loop."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(bus, gateway_settings, stop, host="127.0.0.1", port=port))
    gw = Gateway(port)
    await wait_healthy(gw.http)
    try:
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
