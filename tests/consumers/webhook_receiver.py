"""A real webhook receiver for the tests (Starlette served by uvicorn on loopback) and helpers.

``POST /hook/<name>`` records the request and answers with that endpoint's next scripted
:class:`Reply` (default ``200``). Test modules import the ``receiver`` and ``webhook_settings``
fixtures from here (``tests/consumers`` has no conftest of its own: it is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookgen_events.bus import EventBus
from bookgen_events.consumer import Consumer
from bookgen_events.outcomes import DeadLetter, Outcome
from bookgen_events.settings import Settings
from consumers.webhook import open_channel

from ..helpers import eventually

__all__ = ["eventually"]  # re-exported for the webhook tests


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, headers, and how long to stall before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    endpoint: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    """The recorded requests and scripted replies of every endpoint."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self.app = Starlette(routes=[Route("/hook/{name}", self._hook, methods=["POST"])])

    def url(self, endpoint: str) -> str:
        return f"{self.base_url}/hook/{endpoint}"

    def script(self, endpoint: str, replies: Iterable[Reply], then: Reply | None = None) -> None:
        """Answer the next requests with ``replies``, then with ``then`` (default 200)."""
        self._scripts[endpoint].extend(replies)
        if then is not None:
            self._defaults[endpoint] = then

    def at(self, endpoint: str) -> list[Received]:
        return [r for r in self.requests if r.endpoint == endpoint]

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        self.requests.append(Received(name, dict(request.headers), body, time.monotonic()))
        script = self._scripts[name]
        reply = script.popleft() if script else self._defaults.get(name, Reply())
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(b"ok", status_code=reply.status, headers=reply.headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served by uvicorn on a free loopback port for one test."""
    rec = Receiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        rec.app,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 5
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the webhook receiver did not start")
        await asyncio.sleep(0.01)
    rec.base_url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        server.should_exit = True
        await task
        sock.close()


# -- shared helpers of the webhook tests ------------------------------------------------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks docs' example


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    """Test settings for webhooks: loopback allowed, a known secret, no rate limits."""
    return settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout": 2.0,
            "webhook_rate_limit_per_minute": 0,
            "webhook_rate_limit_per_hour": 0,
            "shutdown_grace_s": 2.0,
        }
    )


@contextlib.asynccontextmanager
async def running(bus: EventBus, settings: Settings, **overrides: Any) -> AsyncIterator[Consumer]:
    """The real consumer loop with the real webhook channel, running until the block ends."""
    async with open_channel(settings) as channel:
        consumer = Consumer.from_settings(bus, channel, settings, **overrides)
        task = asyncio.create_task(consumer.run())
        try:
            yield consumer
        finally:
            consumer.stop()
            await task


async def outcomes(bus: EventBus) -> list[Outcome]:
    return [Outcome.from_fields(f) for _, f in await bus.redis.xrange(bus.names.deliveries)]


async def dead_letters(bus: EventBus) -> list[DeadLetter]:
    entries = await bus.redis.xrange(bus.names.dlq("webhook"))
    return [DeadLetter.from_fields(f) for _, f in entries]


async def final_outcomes(bus: EventBus, count: int, within: float = 10.0) -> list[Outcome]:
    """Wait until ``count`` deliveries are settled (delivered, rate limited or dead-lettered)."""

    async def settled() -> bool:
        return len([o for o in await outcomes(bus) if o.final]) >= count

    await eventually(settled, within, f"{count} settled deliveries")
    return [o for o in await outcomes(bus) if o.final]
