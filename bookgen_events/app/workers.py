"""Every worker a deployment can run, by explicit import: the one place that knows them all.

A worker is ``async def serve(bus, settings, stop, **options)``, running until ``stop`` is
set: the gateway, and one consumer group per channel. Each is imported when it is run, not
when the command line is parsed: importing them all (aiohttp, SQLAlchemy, uvicorn) cost
every ``bookgen-events`` command ~0.5 s before it did anything.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ..bus import EventBus
from ..settings import Settings

Serve = Callable[..., Coroutine[Any, Any, None]]

#: The consumer groups (``consume WORKER``); ``gateway`` is the other worker.
CONSUMERS = ("webhook", "email", "sms", "logger")
WORKERS = ("gateway", *CONSUMERS)


def serve_function(name: str) -> Serve:
    """The ``serve`` of worker ``name``."""
    if name == "gateway":
        from gateway.app import serve
    elif name == "webhook":
        from consumers.webhook import serve
    elif name == "email":
        from consumers.emails import serve
    elif name == "sms":
        from consumers.sms import serve
    elif name == "logger":
        from consumers.logger import serve
    else:
        raise ValueError(f"no worker {name!r}: one of {', '.join(WORKERS)}")
    return serve


def consumed_streams(bus: EventBus, name: str) -> list[str]:
    """The streams worker ``name`` reads as a consumer group (none for the gateway)."""
    if name not in CONSUMERS:
        return []
    parts = bus.partitions  # every partition's streams (STREAM_PARTITIONS)
    if name == "logger":  # it projects the outcomes too
        return [s for p in parts for s in (p.names.events, p.names.deliveries)]
    return [p.names.events for p in parts]


def enabled_workers(settings: Settings) -> list[str]:
    """The consumers ``up`` runs beside the gateway: every one that is switched on."""
    wanted = ["webhook"]
    if settings.email_enabled:
        wanted.append("email")
    if settings.sms_enabled:
        wanted.append("sms")
    if settings.enable_notification_logging:
        wanted.append("logger")
    return wanted
