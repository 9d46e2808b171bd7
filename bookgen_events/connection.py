"""Where Redis is (``REDIS_URL``, else a live embedded server found through its state file),
and the client for it: a plain Redis, or a Redis Cluster (detected from the node named, or
forced with ``REDIS_CLUSTER=true``) through redis-py's cluster client, which follows MOVED
and ASK and retries while a failover runs. Both are used through the same helpers
(:func:`command`, :func:`pipeline`, :func:`run_script`), which pick the fast path for a
plain Redis and the cluster client's routing otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis as sync_redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    UnixDomainSocketConnection,
)
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
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


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a cluster client (sync or asyncio)."""
    return isinstance(redis, RedisCluster | sync_redis.RedisCluster)


async def _cluster_exchange(redis: RedisCluster, commands: Sequence[Sequence[Any]]) -> list[Any]:
    # The cluster client routes each command to its slot's node (one round trip per node),
    # following MOVED/ASK and retrying through a failover; errors come back in place.
    if len(commands) == 1:
        try:
            return [await redis.execute_command(*commands[0])]
        except ResponseError as exc:
            return [exc]
        except AttributeError as exc:  # redis-py on a connection a failover tore down
            raise RedisConnectionError(f"cluster connection dropped: {exc}") from exc
    pipe = redis.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    replies = await pipe.execute(raise_on_error=False)
    # A node's connection failing mid-pipeline comes back in place too (ConnectionError, or
    # redis-py's "'NoneType' object has no attribute 'writelines'" on a dropped connection):
    # raised here, never handed back as if it were a reply.
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
            if isinstance(reply, RedisError):
                raise reply
            raise RedisConnectionError(f"cluster pipeline failed: {reply!r}") from reply
    return replies  # type: ignore[no-any-return]


async def _exchange_retrying(redis: Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    if isinstance(redis, RedisCluster):
        return await _cluster_exchange(redis, commands)
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
    redis: Redis,
    script: AsyncScript,
    calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
    *,
    idempotent: bool = False,
) -> list[Any]:
    """EVALSHA ``script`` per (keys, args) call, pipelined; loads it first if the server does
    not know it (a restart or SCRIPT FLUSH), then runs the calls again.

    ``idempotent`` calls (running them twice changes nothing, as emit's) are retried on a
    cluster through a failover: connection errors, CLUSTERDOWN and TRYAGAIN for up to
    :data:`FAILOVER_RETRY_S` (a replica's promotion takes ``cluster-node-timeout`` plus
    about a second); the cluster client's own retries do not cover a pipeline.
    """
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
    if not idempotent or not isinstance(redis, RedisCluster):
        return await _script_pipeline(redis, script, commands)
    deadline = asyncio.get_running_loop().time() + FAILOVER_RETRY_S
    pause = 0.05
    while True:
        try:
            return await _script_pipeline(redis, script, commands)
        except _FAILOVER_ERRORS:
            if asyncio.get_running_loop().time() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)


async def _script_pipeline(
    redis: Redis, script: AsyncScript, commands: Sequence[Sequence[Any]]
) -> list[Any]:
    try:
        return await pipeline(redis, commands)
    except NoScriptError:
        await redis.script_load(script.script)
        return await pipeline(redis, commands)


#: How long an idempotent script call is retried through a cluster failover.
FAILOVER_RETRY_S = 5.0
_FAILOVER_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    OSError,
)


def is_resp3(redis: Redis) -> bool:
    """Whether ``redis`` speaks RESP3, the reply shape :func:`command`'s callers read."""
    if isinstance(redis, RedisCluster):
        kwargs = redis.get_connection_kwargs()
    else:
        kwargs = redis.connection_pool.connection_kwargs
    return int(kwargs.get("protocol") or DEFAULT_RESP_VERSION) == 3


def cluster_enabled(url: str, timeout: float = 5.0) -> bool:
    """Whether the node ``url`` names runs in cluster mode (``INFO cluster``); False when it
    cannot be asked (the client's own connection then reports why)."""
    if url.startswith("unix:"):
        return False
    try:
        with sync_redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        ) as probe:
            return bool(probe.info("cluster").get("cluster_enabled"))
    except (RedisError, OSError):
        return False


#: The cluster client's retries: commands are retried with backoff for up to ~10 s, long
#: enough for a replica to be promoted with a short ``cluster-node-timeout``; past that the
#: loops' own pause-and-retry (``reader.REDIS_DOWN``) takes over, for as long as it takes.
def _cluster_retry() -> Any:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 12)


def create_redis(url: str, *, cluster: bool | None = None, **kwargs: object) -> Redis:
    """One asyncio client per process; responses decoded to ``str``.

    A :class:`~redis.asyncio.cluster.RedisCluster` when ``cluster`` (``REDIS_CLUSTER``) or,
    left ``None``, when the node ``url`` names has cluster mode on. It is typed as
    :class:`~redis.asyncio.Redis`, whose command methods it shares; what differs (pools,
    pipelines, scripts) goes through this module's helpers.
    """
    if cluster is None:
        cluster = cluster_enabled(url)
    if cluster:
        return _create_cluster(url, **kwargs)
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


def _create_cluster(url: str, **kwargs: object) -> Redis:
    options: dict[str, object] = {
        "decode_responses": True,
        "encoding_errors": "replace",
        "health_check_interval": 30,
        "socket_keepalive": True,
        "protocol": 3,
        "retry": _cluster_retry(),
    }
    options.update(kwargs)
    client = RedisCluster.from_url(url, **options)
    # command() hands its callers raw replies, as on a plain Redis (no response callback).
    client.set_response_callback("XREADGROUP", lambda response, **_: response)
    _locate_stream_reads(client)
    return client  # type: ignore[return-value]


def _locate_stream_reads(client: RedisCluster) -> None:
    """Find an XREAD/XREADGROUP's slot from its one stream key here: redis-py asks a node
    ``COMMAND GETKEYS`` for every such read (their keys "move"), an extra round trip per
    read, all to the same node (measured: 2 per read on one master of three)."""
    original = client._determine_slot

    async def determine_slot(command: str, *args: Any) -> int:
        if _word(command) in ("XREAD", "XREADGROUP"):
            words = [_word(a) for a in args]
            if "STREAMS" in words:
                rest = args[words.index("STREAMS") + 1 :]
                if len(rest) == 2:  # one stream and its id
                    return int(client.keyslot(rest[0]))
        return int(await original(command, *args))

    client._determine_slot = determine_slot  # type: ignore[method-assign]


def _word(arg: Any) -> str:
    return (arg.decode() if isinstance(arg, bytes) else str(arg)).upper()


def create_sync_redis(url: str, *, cluster: bool | None = None) -> sync_redis.Redis:
    """The sync twin of :func:`create_redis` (for :class:`~bookgen_events.producer.SyncProducer`)."""
    if cluster is None:
        cluster = cluster_enabled(url)
    if cluster:
        return sync_redis.RedisCluster.from_url(url, decode_responses=True)  # type: ignore[return-value]
    return sync_redis.Redis.from_url(url, decode_responses=True)
