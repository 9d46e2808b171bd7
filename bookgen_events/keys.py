"""Every Redis key of one deployment, in one place (a cluster hash tag is one change here).

For ``STREAM_PREFIX=bookgen``:

- ``bookgen:events``               the immutable event log, trimmed approximately at STREAM_MAXLEN
- ``bookgen:deliveries``           one outcome entry per delivery attempt
- ``bookgen:dlq:<channel>``        dead letters of a channel, never trimmed
- ``bookgen:scheduled:<channel>``  deliveries due later (retries, replays, redrives), a sorted
  set scored by due time in ms
- ``bookgen:rl:<channel>:m:<key>``, ``...:h:<key>``  the rate limiter's per-minute and
  per-hour windows of one recipient
- ``bookgen:endpoints``, ``bookgen:subscribers``  registered endpoints and subscriber
  profiles (hashes: id -> JSON), each with its audit stream ``...:changes``
- ``bookgen:endpoints:health``  each failing endpoint's window (since, count), for auto-disable
"""

from __future__ import annotations


class StreamNames:
    """Every Redis key of one deployment, derived from ``STREAM_PREFIX``."""

    def __init__(self, prefix: str = "bookgen") -> None:
        self.prefix = prefix
        self.events = f"{prefix}:events"
        self.deliveries = f"{prefix}:deliveries"
        self.endpoints = f"{prefix}:endpoints"
        self.subscribers = f"{prefix}:subscribers"
        self.endpoint_health = f"{prefix}:endpoints:health"

    @staticmethod
    def changes(registry: str) -> str:
        """The audit stream of a registry hash (``endpoints``, ``subscribers``)."""
        return f"{registry}:changes"

    def dlq(self, channel: str) -> str:
        return f"{self.prefix}:dlq:{channel}"

    def scheduled(self, channel: str) -> str:
        return f"{self.prefix}:scheduled:{channel}"

    def rate_limit(self, channel: str, key: str) -> list[str]:
        """The per-minute and per-hour windows of ``key`` (a recipient) on ``channel``."""
        base = f"{self.prefix}:rl:{channel}"
        return [f"{base}:m:{key}", f"{base}:h:{key}"]
