"""The seed's ``NotificationService``: one method per notification type, each emitting an event.

``EventFactory`` builds the events (and adds ``ADMIN_EMAILS`` to critical error alerts and
admin alerts); :class:`NotificationService` emits them asynchronously and
:class:`SyncNotificationService` blockingly, with the very same signatures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec

from .bus import EventBus
from .events import Event, EventType, make_event
from .producer import SyncProducer, default_bus, emit_sync
from .settings import Settings, get_settings

P = ParamSpec("P")
Metadata = dict[str, Any] | None


def _emails(*groups: Sequence[str] | str | None) -> list[str]:
    out: list[str] = []
    for group in groups:
        if group:
            out.extend([group] if isinstance(group, str) else group)
    return list(dict.fromkeys(out))


class EventFactory:
    """Builds validated events from the seed's method arguments."""

    def __init__(self, admin_emails: Sequence[str] = ()) -> None:
        self.admin_emails = list(admin_emails)

    def progress_update(
        self,
        job_id: str | int,
        progress: float,
        phase: str | None = None,
        message: str | None = None,
        *,
        user_id: str | None = None,
        webhook_url: str | None = None,
        user_email: str | None = None,
        metadata: Metadata = None,
        user_phone: str | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        data = {
            "progress": progress,
            "phase": phase,
            "message": message,
            "metadata": metadata or {},
        }
        return self._event(
            EventType.PROGRESS_UPDATE, job_id, user_id, data, webhook_url, user_email,
            phones=user_phone, deliver_at=deliver_at,
        )  # fmt: skip

    def completion(
        self,
        job_id: str | int,
        biography_id: int | str | None = None,
        character_name: str | None = None,
        status: str = "completed",
        webhook_url: str | None = None,
        user_email: str | None = None,
        *,
        user_id: str | None = None,
        metadata: Metadata = None,
        user_phone: str | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        data = {
            "biography_id": biography_id,
            "character_name": character_name,
            "status": status,
            "metadata": metadata or {},
        }
        return self._event(
            EventType.COMPLETION,
            job_id,
            user_id,
            data,
            webhook_url,
            user_email,
            phones=user_phone,
            deliver_at=deliver_at,
        )

    def error_alert(
        self,
        job_id: str | int,
        error: str,
        severity: str = "error",
        webhook_url: str | None = None,
        admin_emails: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        user_email: str | None = None,
        metadata: Metadata = None,
        user_phone: str | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        admins = self.admin_emails if severity == "critical" else []
        data = {"error": error, "severity": severity, "metadata": metadata or {}}
        emails = _emails(user_email, admin_emails, admins)
        return self._event(
            EventType.ERROR_ALERT,
            job_id,
            user_id,
            data,
            webhook_url,
            emails,
            phones=user_phone,
            deliver_at=deliver_at,
        )

    def status_change(
        self,
        job_id: str | int,
        old_status: str | None,
        new_status: str,
        webhook_url: str | None = None,
        user_email: str | None = None,
        *,
        user_id: str | None = None,
        metadata: Metadata = None,
        user_phone: str | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        data = {"old_status": old_status, "new_status": new_status, "metadata": metadata or {}}
        return self._event(
            EventType.STATUS_CHANGE, job_id, user_id, data, webhook_url, user_email,
            phones=user_phone, deliver_at=deliver_at,
        )  # fmt: skip

    def admin_alert(
        self,
        alert_type: str,
        message: str,
        admin_emails: Sequence[str] | None = None,
        metadata: Metadata = None,
        *,
        webhook_url: str | None = None,
        job_id: str | int | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        data = {"alert_type": alert_type, "message": message, "metadata": metadata or {}}
        emails = _emails(admin_emails, self.admin_emails)
        return self._event(
            EventType.ADMIN_ALERT, job_id, None, data, webhook_url, emails, deliver_at=deliver_at
        )

    @staticmethod
    def _event(
        type_: EventType,
        job_id: str | int | None,
        user_id: str | None,
        data: dict[str, Any],
        webhook_url: str | None,
        emails: Sequence[str] | str | None,
        *,
        phones: Sequence[str] | str | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        return make_event(
            {
                "type": type_,
                "job_id": None if job_id is None else str(job_id),
                "user_id": user_id,
                "data": data,
                "webhook_url": webhook_url,
                "emails": _emails(emails),
                "phones": _emails(phones),  # the same flattening, de-duplicated
                "deliver_at": deliver_at,  # held until then (SPEC 11)
            }
        )


def _async_sender(
    build: Callable[Concatenate[EventFactory, P], Event],
) -> Callable[Concatenate[NotificationService, P], Coroutine[Any, Any, str]]:
    async def send(self: NotificationService, *args: P.args, **kwargs: P.kwargs) -> str:
        return await self.emit(build(self.events, *args, **kwargs))

    return functools.wraps(build)(send)


def _sync_sender(
    build: Callable[Concatenate[EventFactory, P], Event],
) -> Callable[Concatenate[SyncNotificationService, P], str]:
    def send(self: SyncNotificationService, *args: P.args, **kwargs: P.kwargs) -> str:
        return self.emit(build(self.events, *args, **kwargs))

    return functools.wraps(build)(send)


class NotificationService:
    """Emits the seed's notifications; every method returns the stream entry id.

    Every method takes ``deliver_at=`` (a datetime; naive means UTC): the event is then held
    until that time and ``""`` returned (SPEC 11).
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        *,
        settings: Settings | None = None,
        admin_emails: Sequence[str] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self._bus = bus
        self.events = EventFactory(settings.admin_emails if admin_emails is None else admin_emails)

    async def emit(self, event: Event) -> str:
        return await (self._bus or default_bus()).emit(event)

    send_progress_update = _async_sender(EventFactory.progress_update)
    send_completion_notification = _async_sender(EventFactory.completion)
    send_error_alert = _async_sender(EventFactory.error_alert)
    send_status_change = _async_sender(EventFactory.status_change)
    send_admin_alert = _async_sender(EventFactory.admin_alert)


class SyncNotificationService:
    """The blocking twin of :class:`NotificationService`, for Celery tasks and scripts."""

    def __init__(
        self,
        producer: SyncProducer | None = None,
        *,
        settings: Settings | None = None,
        admin_emails: Sequence[str] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self._producer = producer
        self.events = EventFactory(settings.admin_emails if admin_emails is None else admin_emails)

    def emit(self, event: Event) -> str:
        return self._producer.emit(event) if self._producer else emit_sync(event)

    send_progress_update = _sync_sender(EventFactory.progress_update)
    send_completion_notification = _sync_sender(EventFactory.completion)
    send_error_alert = _sync_sender(EventFactory.error_alert)
    send_status_change = _sync_sender(EventFactory.status_change)
    send_admin_alert = _sync_sender(EventFactory.admin_alert)
