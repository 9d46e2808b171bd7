"""The rate limiter's batched checks, on a real Redis: one script call per loop turn, the same
verdicts as one call per hit, and windows of any length."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from bookgen_events import ratelimit
from bookgen_events.connection import run_script_many
from bookgen_events.ratelimit import MINUTE_MS, RateLimiter, windows


async def test_checks_of_one_turn_go_in_one_call_and_count_in_order(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve checks started together: one script call; per key, the first N are allowed."""
    limiter = RateLimiter(redis, prefix=prefix)
    calls: list[int] = []

    async def counted(client: Any, script: Any, batch: Any) -> list[Any]:
        calls.append(len(batch))
        return await run_script_many(client, script, batch)

    monkeypatch.setattr(ratelimit, "run_script_many", counted)
    verdicts = await asyncio.gather(
        *(limiter.check("webhook", f"r{i % 2}", f"e{i}", windows(4, 0)) for i in range(12))
    )
    assert calls == [1]  # one call, one EVALSHA in it
    assert verdicts == [True] * 8 + [False] * 4
    assert await redis.zcard(f"{prefix}:rl:webhook:m:r0") == 4


async def test_a_retry_already_counted_is_allowed_again(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix=prefix)
    assert await limiter.check("webhook", "r", "same", windows(1, 0))
    assert await limiter.check("webhook", "r", "same", windows(1, 0))
    assert not await limiter.check("webhook", "r", "other", windows(1, 0))


async def test_a_short_window_refuses_a_burst_and_frees_up(redis: Redis, prefix: str) -> None:
    """5 per 200 ms beside a per-minute limit: the sixth of a burst waits for the window."""
    limiter = RateLimiter(redis, prefix=prefix)
    wins = windows(100, 0, (200, 5))
    burst = await asyncio.gather(*(limiter.check("w", "d", f"b{i}", wins) for i in range(6)))
    assert burst == [True] * 5 + [False]
    await asyncio.sleep(0.25)
    assert await limiter.check("w", "d", "late", wins)
    assert await redis.zcard(f"{prefix}:rl:w:m:d") == 6  # the minute counted every allowed one
    assert await redis.pttl(f"{prefix}:rl:w:m:d:200") <= 200
    assert MINUTE_MS == 60_000


async def test_no_limit_costs_no_call(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix=prefix)
    assert all([await limiter.check("w", "k", f"{i}", windows(0, 0)) for i in range(20)])
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*")] == []
