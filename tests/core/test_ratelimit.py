"""The shared rate limiter, on a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bookgen_events.ratelimit import RateLimiter


async def test_minute_window_counts_exactly(redis: Redis, prefix: str) -> None:
    """N per minute admits exactly N distinct notifications, per channel and key."""
    limiter = RateLimiter(redis, prefix=prefix)
    hits = [
        await limiter.hit("email", "a@x.com", f"e{i}", per_minute=3, per_hour=100, at_ms=1_000_000)
        for i in range(5)
    ]
    assert hits == [True, True, True, False, False]
    assert await limiter.hit("email", "b@x.com", "e9", per_minute=3, per_hour=100, at_ms=1_000_000)
    assert await limiter.hit(
        "webhook", "a@x.com", "e9", per_minute=3, per_hour=100, at_ms=1_000_000
    )


async def test_window_slides(redis: Redis, prefix: str) -> None:
    """Once a minute has passed since the oldest hit, a slot frees up; the hour still counts."""
    limiter = RateLimiter(redis, prefix=prefix)
    for i in range(2):
        assert await limiter.hit("email", "k", f"a{i}", per_minute=2, per_hour=3, at_ms=0 + i)
    assert not await limiter.hit("email", "k", "a2", per_minute=2, per_hour=3, at_ms=30_000)
    assert await limiter.hit("email", "k", "a3", per_minute=2, per_hour=3, at_ms=61_000)
    assert not await limiter.hit("email", "k", "a4", per_minute=2, per_hour=3, at_ms=200_000)


async def test_refused_hit_spends_no_slot_in_either_window(redis: Redis, prefix: str) -> None:
    """A hit refused by the hourly limit does not consume a per-minute slot (atomic check)."""
    limiter = RateLimiter(redis, prefix=prefix)
    assert await limiter.hit("email", "k", "x1", per_minute=5, per_hour=1, at_ms=0)
    assert not await limiter.hit("email", "k", "x2", per_minute=5, per_hour=1, at_ms=1)
    assert await redis.zcard(f"{prefix}:rl:email:m:k") == 1


async def test_same_notification_counts_once(redis: Redis, prefix: str) -> None:
    """A retry or redelivery of a counted notification is admitted without a new slot."""
    limiter = RateLimiter(redis, prefix=prefix)
    assert await limiter.hit("email", "k", "same", per_minute=1, per_hour=0)
    assert await limiter.hit("email", "k", "same", per_minute=1, per_hour=0)
    assert not await limiter.hit("email", "k", "other", per_minute=1, per_hour=0)


async def test_concurrent_replicas_share_the_limit(
    redis_url: str, prefix: str, redis: Redis
) -> None:
    """Two clients (as two replicas) racing for 10 slots get exactly 10 between them."""
    other = Redis.from_url(redis_url, decode_responses=True)
    try:
        limiters = [RateLimiter(redis, prefix=prefix), RateLimiter(other, prefix=prefix)]
        results = await asyncio.gather(
            *(
                limiters[i % 2].hit("webhook", "u", f"n{i}", per_minute=10, per_hour=0)
                for i in range(60)
            )
        )
    finally:
        await other.aclose()
    assert sum(results) == 10


async def test_zero_disables_limits(redis: Redis, prefix: str) -> None:
    """Limits of 0 turn limiting off and touch nothing in Redis."""
    limiter = RateLimiter(redis, prefix=prefix)
    assert all(
        [await limiter.hit("email", "k", f"{i}", per_minute=0, per_hour=0) for i in range(50)]
    )
    assert await redis.exists(f"{prefix}:rl:email:m:k") == 0
