"""Where Redis is: ``REDIS_URL``, else a live embedded server found through its state file."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    UnixDomainSocketConnection,
)
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.utils import DEFAULT_RESP_VERSION, HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _pack

from .embedded import running_url
from .errors import ConfigError
from .settings import Settings


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use, or a :class:`ConfigError` saying how to get one.

    ``REDIS_URL`` when set; else the live embedded server of ``EMBEDDED_DATA_DIR``, whose URL
    carries the password it requires (see :func:`~.embedded.running_url`).
    """
    if settings.redis_url:
        return settings.redis_url
    url = running_url(Path(settings.embedded_data_dir))
    if url:
        return url
    raise ConfigError(
        "REDIS_URL is not set and no embedded server is running in "
        f"{Path(settings.embedded_data_dir).resolve()} (EMBEDDED_DATA_DIR): set REDIS_URL, "
        "or start one with `bookgen-events up` in that folder"
    )


class _HiredisPacking:
    """Pack commands with hiredis (C) as redis-py's sync client does; its asyncio client packs
    in pure Python, which costs more than the round trip for a pipeline of stream entries."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "XINFO STREAM" -> two words
            args = (*first.split(), *args[1:])
        try:
            return [_pack(args)]
        except TypeError:  # memoryview and friends: let redis-py encode them
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class LeanPool(ConnectionPool):
    """redis-py's pool, plus a checkout for the commands run once per event.

    Per command, redis-py 8's asyncio client spends more Python than a loopback round trip
    costs: observability records around the pool, a retry wrapper, a response callback.
    :func:`command` and :func:`pipeline` skip those for the bus's hot path (XADD, XREADGROUP,
    the commit script); the connections stay this pool's, so ``aclose()`` closes them like
    any other. This reaches into the pool's private state (its lock and connection lists,
    the connection's ``_send_packed_command``): ``redis`` is pinned to its major version in
    pyproject.toml and ``tests/core/test_library_contracts.py`` fails on a rename.
    """

    async def take(self) -> AbstractConnection:
        """Check a connection out as ``get_connection()`` does, under the pool's lock.

        The checkout itself never awaits, so while nobody holds the lock it runs as if
        holding it, without the cost of taking it; while someone does (a ``release()``
        waiting for a disconnect), it waits its turn."""
        if self._lock.locked():
            async with self._lock:
                return self.get_available_connection()
        return self.get_available_connection()

    def give_back(self, conn: AbstractConnection) -> None:
        self._in_use_connections.discard(conn)
        self._available_connections.append(conn)


async def _exchange(pool: ConnectionPool, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Send ``commands`` on one pooled connection and read their raw replies.

    Error replies are returned as exceptions in place, so every reply is read; any other
    failure (including a cancel) leaves the connection closed, never with a reply unread.
    A :class:`LeanPool` is used directly; any other pool through its public API.
    """
    lean = isinstance(pool, LeanPool)
    conn = await pool.take() if isinstance(pool, LeanPool) else await pool.get_connection()
    try:
        if not conn.is_connected:
            await conn.connect()
        packed = [chunk for args in commands for chunk in conn.pack_command(*args)]
        if lean:
            # send_packed_command() wraps the write in asyncio.wait_for, a task per command
            # on Python 3.11; asyncio.timeout bounds it the same way on the caller's task.
            try:
                async with asyncio.timeout(conn.socket_timeout):
                    await conn._send_packed_command(packed)
            except OSError as exc:
                raise RedisConnectionError(f"error writing to Redis: {exc}") from exc
        else:
            await conn.send_packed_command(packed)
        out = []
        for _ in commands:
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:
                out.append(exc)
        return out
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        if lean:
            pool.give_back(conn)  # type: ignore[attr-defined]
        else:
            await pool.release(conn)


async def _exchange_retrying(redis: Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    # A pooled connection may have died while idle (Redis restarted): one retry on a fresh
    # connection, as redis-py's own retry would do.
    try:
        return await _exchange(redis.connection_pool, commands)
    except RedisConnectionError:
        return await _exchange(redis.connection_pool, commands)


async def command(redis: Redis, *args: Any) -> Any:
    """Run one command and return its raw reply: no response callback, whatever the pool,
    so a caller handles one shape (RESP3, which :class:`EventBus` requires)."""
    [reply] = await _exchange_retrying(redis, [args])
    if isinstance(reply, ResponseError):
        raise reply
    return reply


async def pipeline(redis: Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Run ``commands`` in one round trip; raises the first error reply after reading all."""
    replies = await _exchange_retrying(redis, commands)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


async def run_script(
    redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
) -> Any:
    """EVALSHA ``script`` once; see :func:`run_script_many`."""
    [reply] = await run_script_many(redis, script, [(keys, args)])
    return reply


async def run_script_many(
    redis: Redis, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """EVALSHA ``script`` per (keys, args) call, pipelined; loads it first if the server does
    not know it (a restart or SCRIPT FLUSH), then runs the calls again."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
    try:
        return await pipeline(redis, commands)
    except NoScriptError:
        await redis.script_load(script.script)
        return await pipeline(redis, commands)


def is_resp3(redis: Redis) -> bool:
    """Whether ``redis`` speaks RESP3, the reply shape :func:`command`'s callers read."""
    protocol = redis.connection_pool.connection_kwargs.get("protocol") or DEFAULT_RESP_VERSION
    return int(protocol) == 3


def create_redis(url: str, **kwargs: object) -> Redis:
    """One asyncio client per process; responses decoded to ``str``."""
    options: dict[str, object] = {
        "decode_responses": True,
        # Bytes that are not UTF-8 (a hand-written entry) become U+FFFD instead of crashing
        # every read of the batch: the entry then fails validation and is dead-lettered.
        "encoding_errors": "replace",
        "health_check_interval": 30,
        "socket_keepalive": True,
    }
    if HIREDIS_AVAILABLE:
        unix = url.startswith("unix:")
        options["connection_class"] = HiredisUnixConnection if unix else HiredisConnection
    options.update(kwargs)
    return Redis.from_pool(LeanPool.from_url(url, **options))
