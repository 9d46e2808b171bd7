"""Where Redis is: ``REDIS_URL``, else a live embedded server found through its state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _pack

from .embedded import running_url
from .errors import ConfigError
from .settings import Settings


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use, or a :class:`ConfigError` saying how to get one."""
    if settings.redis_url:
        return settings.redis_url
    url = running_url(Path(settings.embedded_data_dir))
    if url:
        return url
    raise ConfigError(
        "REDIS_URL is not set and no embedded server is running: set REDIS_URL, "
        "or start one with `bookgen-events up`"
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
    return Redis.from_url(url, **options)  # type: ignore[arg-type]
