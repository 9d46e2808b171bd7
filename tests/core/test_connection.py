"""The lean command path the bus uses for XADD, XREADGROUP and its scripts, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bookgen_events import ConfigError, EventBus
from bookgen_events.connection import command, create_redis, pipeline
from bookgen_events.events import decode

from ..support.events import progress


async def test_cancelled_command_leaves_no_reply_behind(redis: Redis, prefix: str) -> None:
    waiting = asyncio.create_task(command(redis, "BLPOP", f"{prefix}:list", 5))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await redis.rpush(f"{prefix}:list", "late")
    await asyncio.sleep(0.05)
    # Had the cancelled BLPOP's connection gone back to the pool open, its reply
    # ([list, "late"]) would now be read as the answer to this PING.
    assert await command(redis, "PING") == "PONG"
    assert await redis.lrange(f"{prefix}:list", 0, -1) == ["late"]


async def test_connection_killed_while_idle_is_replaced(redis: Redis, redis_url: str) -> None:
    client_id = await command(redis, "CLIENT", "ID")
    other = create_redis(redis_url)
    try:
        assert await other.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        await other.aclose()
    assert await command(redis, "PING") == "PONG"
    assert await command(redis, "CLIENT", "ID") != client_id


async def test_error_replies_raise_and_the_connection_stays_usable(
    redis: Redis, prefix: str
) -> None:
    await redis.set(f"{prefix}:str", "x")
    with pytest.raises(ResponseError, match=r"WRONGTYPE|wrong kind"):
        await command(redis, "XADD", f"{prefix}:str", "*", "a", "1")
    with pytest.raises(ResponseError):
        await pipeline(redis, [("PING",), ("XADD", f"{prefix}:str", "*", "a", "1"), ("PING",)])
    assert await pipeline(redis, [("PING",), ("ECHO", "ok")]) == ["PONG", "ok"]


async def test_emit_many_spans_script_calls_in_order(bus: EventBus) -> None:
    ids = await bus.emit_many([progress(f"job-{i}") for i in range(2500)])
    entries = await bus.range()
    assert ids == [entry_id for entry_id, _ in entries]
    assert [decode(fields).job_id for _, fields in entries] == [f"job-{i}" for i in range(2500)]


async def test_emit_many_reloads_its_script_after_a_flush(bus: EventBus) -> None:
    await bus.redis.script_flush()  # what a restarted Redis looks like to the client
    assert len(await bus.emit_many([progress("j"), progress("j")])) == 2
    assert await bus.length() == 2


async def test_a_client_built_elsewhere_gets_the_same_raw_replies(
    redis_url: str, prefix: str
) -> None:
    """A client not built by create_redis goes through its pool's public API, and command()
    still returns raw replies (no redis-py callback), so the bus reads one shape."""
    plain = Redis.from_url(redis_url, decode_responses=True)
    try:
        bus = EventBus(plain, prefix=prefix)
        first = await bus.emit(progress("j"))
        rest = await bus.emit_many([progress("j"), progress("j")])
        assert [entry_id for entry_id, _ in await bus.range()] == [first, *rest]
        assert await command(plain, "PING") == "PONG"  # no callback turning it into True
        await bus.ensure_group("g", start="0")
        read = await bus.read_group("g", "c", count=10, block_ms=None)
        assert [entry_id for entry_id, _ in read] == [first, *rest]
    finally:
        await plain.delete(bus.names.events)
        await plain.aclose()


async def test_a_resp2_client_is_refused(redis_url: str) -> None:
    """The bus reads RESP3 replies only; a RESP2 client fails at construction, not mid-read."""
    resp2 = Redis.from_url(redis_url, decode_responses=True, protocol=2)
    try:
        with pytest.raises(ConfigError, match="RESP3"):
            EventBus(resp2)
    finally:
        await resp2.aclose()
