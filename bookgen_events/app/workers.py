"""Every worker a deployment can run, by explicit import: the one place that knows them all.

A worker is ``async def serve(bus, settings, stop, **options)``, running until ``stop`` is
set: the gateway, and one consumer group per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from consumers import emails, logger, webhook
from gateway import app as gateway

from ..settings import Settings

Serve = Callable[..., Coroutine[Any, Any, None]]

WORKERS: dict[str, Serve] = {
    "gateway": gateway.serve,
    "webhook": webhook.serve,
    "email": emails.serve,
    "logger": logger.serve,
}
#: The consumer groups among them (``consume WORKER``).
CONSUMERS = tuple(name for name in WORKERS if name != "gateway")


def enabled_workers(settings: Settings) -> list[str]:
    """The consumers ``up`` runs beside the gateway: every one that is switched on."""
    wanted = ["webhook"]
    if settings.email_enabled:
        wanted.append("email")
    if settings.enable_notification_logging:
        wanted.append("logger")
    return wanted
