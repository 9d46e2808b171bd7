"""Local receivers shaped like Slack's and Discord's incoming webhooks, on aiohttp.

Each records exactly what arrives (:class:`Arrival`: path, headers, body, time) and answers
as the service does: Slack ``200 ok`` (``400 invalid_payload`` when ``text`` is missing),
Discord ``204`` (``400`` with a JSON error when neither ``content`` nor ``embeds``). A
Discord receiver can be told to rate-limit the next requests: ``429`` with
``{"message": ..., "retry_after": <s>, "global": false}`` and a ``Retry-After`` header, as
Discord sends them.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class ChatReceiver:
    """A Slack- or Discord-shaped webhook receiver on a free loopback port."""

    def __init__(self, kind: str) -> None:
        assert kind in ("slack", "discord")
        self.kind = kind
        self.arrivals: list[Arrival] = []
        self.base_url = ""
        #: The next answers to give instead of success: (status, headers, body).
        self.script: deque[tuple[int, dict[str, str], bytes]] = deque()
        self._runner: web.AppRunner | None = None

    def url(self, name: str = "hook") -> str:
        if self.kind == "slack":
            return f"{self.base_url}/services/T000/B000/{name}"
        return f"{self.base_url}/api/webhooks/123/{name}"

    def rate_limit_once(self, retry_after: float, header: str | None = None) -> None:
        """Answer the next request as Discord does when a webhook posts too fast."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        body["global"] = False
        headers = {"content-type": "application/json"}
        if header is not None:
            headers["retry-after"] = header
        self.script.append((429, headers, json.dumps(body).encode()))

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrivals.append(Arrival(request.path, dict(request.headers), body, time.monotonic()))
        if self.script:
            status, headers, answer = self.script.popleft()
            return web.Response(status=status, headers=headers, body=answer)
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if self.kind == "slack":
            if not isinstance(message, dict) or not message.get("text"):
                return web.Response(status=400, text="invalid_payload")
            return web.Response(text="ok")
        if not isinstance(message, dict) or not (message.get("content") or message.get("embeds")):
            return web.json_response(
                {"message": "Cannot send an empty message", "code": 50006}, status=400
            )
        return web.Response(status=204)

    async def start(self) -> ChatReceiver:
        app = web.Application()
        app.router.add_post("/services/{team}/{bot}/{token}", self._hook)
        app.router.add_post("/api/webhooks/{id}/{token}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def slack_receiver() -> AsyncIterator[ChatReceiver]:
    receiver = await ChatReceiver("slack").start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def discord_receiver() -> AsyncIterator[ChatReceiver]:
    receiver = await ChatReceiver("discord").start()
    try:
        yield receiver
    finally:
        await receiver.stop()
