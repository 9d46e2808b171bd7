"""Waiting on conditions, never on fixed sleeps: :func:`eventually` and the HTTP waits built on it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

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


async def wait_healthy(
    base: str,
    within: float = 15.0,
    *,
    alive: Callable[[], None] | None = None,
    step: float = 0.05,
) -> None:
    """Wait until ``base/health`` answers 200 (a gateway that is up and reaches Redis).

    ``alive`` is called before every probe and raises to fail at once, e.g. when the
    process that should answer has exited.
    """

    async def healthy() -> bool:
        if alive is not None:
            alive()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/health", timeout=1)).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(healthy, within, f"{base} to become healthy", step=step)


async def wait_answer(url: str, within: float = 30.0, step: float = 0.2) -> httpx.Response:
    """The first HTTP response ``url`` gives, whatever its status; re-raises the last
    transport error after ``within`` seconds."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=2)
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(step)
