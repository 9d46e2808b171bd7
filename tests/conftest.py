"""Shared fixtures: a real Redis (``REDIS_URL`` if it answers, else the embedded server).

Tests never skip for want of Redis. Each test gets its own ``STREAM_PREFIX``, so tests share
one server without seeing each other's keys, and its keys are deleted afterwards. The
fixtures of ``tests.support`` that several folders use (the gateway, the webhook receiver)
are imported here, so every folder gets them without importing from another.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings, load_settings
from bookgen_events.connection import create_redis
from bookgen_events.embedded import EmbeddedRedis
from tests.support.browser import browser
from tests.support.gateway import gateway, gateway_settings, start_gateway
from tests.support.processes import process_env
from tests.support.twilio import twilio
from tests.support.webhooks import receiver, webhook_settings

__all__ = [
    "browser",
    "gateway",
    "gateway_settings",
    "receiver",
    "start_gateway",
    "twilio",
    "webhook_settings",
]


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server for the whole run."""
    url = os.environ.get("REDIS_URL")
    if url and _answers(url):
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"), port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


#: The consumer groups of a deployment: (group, stream names attribute).
DEPLOYED_GROUPS = (
    ("webhook", "events"),
    ("email", "events"),
    ("logger", "events"),
    ("logger", "deliveries"),
)


@pytest.fixture
def bare_bus(redis: Redis, prefix: str) -> EventBus:
    """A bus on the test's own prefix with no stream and no group yet."""
    return EventBus(redis, prefix=prefix, maxlen=10_000)


@pytest.fixture
async def bus(bare_bus: EventBus) -> EventBus:
    """A bus on the test's own prefix, its channel groups already in place.

    New groups start at the end of the stream (SPEC 11), so, as in a deployment whose
    consumers run before producers emit, the groups exist before the test emits anything.
    Tests of that rule itself use group names of their own.
    """
    for group, stream in DEPLOYED_GROUPS:
        await bare_bus.ensure_group(group, stream=getattr(bare_bus.names, stream))
    return bare_bus


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own prefix, fast retries, SQLite in tmp_path."""
    return load_settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        stream_maxlen=10_000,
        claim_idle_ms=1000,
        webhook_retry_schedule="100ms,200ms,300ms",
        email_retry_schedule="100ms,200ms,300ms",
        database_url=f"sqlite:///{tmp_path / 'bookgen.db'}",
        embedded_data_dir=str(tmp_path / "embedded"),
        _env_file=None,
    )


@pytest.fixture
def cli_env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``bookgen-events`` as a real subprocess against the test Redis."""
    return process_env(
        REDIS_URL=redis_url,
        STREAM_PREFIX=prefix,
        CLAIM_IDLE_MS="1000",
        DATABASE_URL=f"sqlite:///{tmp_path / 'bookgen.db'}",
    )
