"""The webhook side of the tests: one real receiver, the webhook settings, the running channel.

:class:`Receiver` is Starlette served by uvicorn on loopback. ``POST /hook/<name>`` records
the request on arrival and answers with that endpoint's next scripted :class:`Reply`
(default ``200``); ``delay`` stalls every answer and ``flap(down, up)`` makes every endpoint
answer 500 for ``down`` seconds, then as scripted for ``up``, repeating. ``accepted`` counts
the 2xx answers per ``webhook-id``, ``refused`` the flapped ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter, defaultdict, deque
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
from bookgen_events.settings import Settings
from consumers.webhook import open_channel

from .waits import eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks docs' example


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
        self.accepted: Counter[str] = Counter()  # webhook-id -> 2xx answers
        self.refused = 0  # 500s answered while flapping
        self.delay = 0.0  # added to every answer
        self._flap: tuple[float, float, float] | None = None
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
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

    def flap(self, down: float, up: float) -> None:
        """From now on, answer 500 for ``down`` seconds, then as scripted for ``up``, repeating."""
        self._flap = (time.monotonic(), down, up)

    def steady(self) -> None:
        self._flap = None

    def _failing(self) -> bool:
        if self._flap is None:
            return False
        since, down, up = self._flap
        return (time.monotonic() - since) % (down + up) < down

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        self.requests.append(Received(name, dict(request.headers), body, time.monotonic()))
        script = self._scripts[name]
        reply = script.popleft() if script else self._defaults.get(name, Reply())
        if self.delay or reply.delay:
            await asyncio.sleep(self.delay + reply.delay)
        if self._failing():
            self.refused += 1
            return Response(b"down", status_code=500)
        if 200 <= reply.status < 300:
            self.accepted[request.headers.get("webhook-id", "")] += 1
        return Response(b"ok", status_code=reply.status, headers=reply.headers)

    async def start(self) -> Receiver:
        """Serve on a free loopback port (bound before uvicorn starts, so no race)."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="none", access_log=False,
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        server = self._server = uvicorn.Server(config)
        task = self._task = asyncio.create_task(server.serve(sockets=[self._sock]))

        def started() -> bool:
            if task.done():
                raise RuntimeError("the webhook receiver did not start")
            return server.started

        await eventually(started, 5, "the webhook receiver to start", step=0.01)
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._sock is not None:
            self._sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served by uvicorn on a free loopback port for one test."""
    rec = await Receiver().start()
    try:
        yield rec
    finally:
        await rec.stop()


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
