"""Test doubles of the *channel* seam (never of the runtime, Redis or a transport)."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx

from bookgen_events import Event, Reject, RetryLater

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    within: float = 10.0,
    what: str = "condition",
    step: float = 0.02,
) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that;
    fail after ``within`` seconds. Tests wait on conditions, never on fixed sleeps."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(step)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(base: str, within: float = 15.0) -> None:
    """Wait until ``base/health`` answers 200 (a gateway that is up and reaches Redis)."""

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/health", timeout=1)).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(healthy, within, f"{base} to become healthy", step=0.05)


class RecordingChannel:
    """A channel that records deliveries in memory and can fail on demand.

    ``fail[job_id]`` = how many attempts to fail with RetryLater before succeeding;
    job ids in ``reject`` fail permanently; ``delay[job_id]`` sleeps before delivering.
    """

    def __init__(self, name: str = "webhook") -> None:
        self.name = name
        self.delivered: list[tuple[str, str]] = []  # (event id, recipient)
        self.attempts: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.reject: set[str] = set()
        self.delay: dict[str, float] = {}

    def recipients(self, event: Event) -> Sequence[str]:
        return [event.webhook_url] if event.webhook_url else list(event.emails)

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return recipient

    async def deliver(self, event: Event, recipient: str) -> int | None:
        job = event.job_id or ""
        self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if job in self.delay:
            await asyncio.sleep(self.delay[job])
        if job in self.reject:
            raise Reject("permanently refused", status_code=410)
        if self.fail.get(job, 0) > 0:
            self.fail[job] -= 1
            raise RetryLater("temporarily down", status_code=503)
        self.delivered.append((event.id, recipient))
        return 200


def progress(job_id: str, url: str = "https://hooks.example.com/in", **extra: object) -> dict:
    """A valid progress event for ``job_id`` aimed at webhook ``url``."""
    return {
        "type": "progress_update",
        "job_id": job_id,
        "data": {"progress": 10.0, "phase": "writing"},
        "webhook_url": url,
        **extra,
    }
