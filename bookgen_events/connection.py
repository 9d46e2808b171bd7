"""Where Redis is: ``REDIS_URL``, else a live embedded server found through its state file."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

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


def create_redis(url: str, **kwargs: object) -> Redis:
    """One asyncio client per process; responses decoded to ``str``."""
    options: dict[str, object] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_keepalive": True,
    }
    options.update(kwargs)
    return Redis.from_url(url, **options)  # type: ignore[arg-type]
