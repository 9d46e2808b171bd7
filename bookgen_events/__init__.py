"""bookgen-events: an event-sourced notification backbone on Redis Streams.

Producers call :func:`emit` (or use :class:`NotificationService`); independent consumer
groups deliver each event over WebSocket, webhooks and email and record it in SQL.
"""

from .bus import EventBus
from .channel import Channel
from .consumer import Consumer
from .errors import (
    BookgenEventsError,
    ConfigError,
    DecodeError,
    EventTooLargeError,
    EventValidationError,
    Reject,
    RetryLater,
)
from .events import Event, EventType
from .keys import StreamNames
from .producer import configure, emit, emit_many, emit_many_sync, emit_sync
from .service import EventFactory, NotificationService, SyncNotificationService
from .settings import Settings, get_settings, load_settings

__all__ = [
    "BookgenEventsError",
    "Channel",
    "ConfigError",
    "Consumer",
    "DecodeError",
    "Event",
    "EventBus",
    "EventFactory",
    "EventTooLargeError",
    "EventType",
    "EventValidationError",
    "NotificationService",
    "Reject",
    "RetryLater",
    "Settings",
    "StreamNames",
    "SyncNotificationService",
    "configure",
    "emit",
    "emit_many",
    "emit_many_sync",
    "emit_sync",
    "get_settings",
    "load_settings",
]
