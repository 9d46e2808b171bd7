"""The notification log: the ``notifications`` table as an idempotent projection of the streams.

Consumer group ``logger`` reads both ``bookgen:events`` (one row per event x channel x
recipient) and ``bookgen:deliveries`` (status, attempts, errors). Each read batch becomes one
database transaction of bulk upserts (see :mod:`bookgen_events.db` for the keys and the
order-safe merge), and the batch's entries are acknowledged only after that transaction
commits: a crash in between redelivers entries whose rows are already there, which the
upserts absorb. A database outage keeps the batch in memory and unacknowledged, retried with
backoff; undecodable entries go to ``bookgen:dlq:logger``.

This does not run on :class:`~bookgen_events.consumer.Consumer`: that runtime delivers one
event to one recipient at a time, while a projection wants whole batches per transaction.

WebSocket rows are written ``delivered`` at the event's time: the gateway broadcasts every
event it reads and reports no per-client outcome, so "delivered" here means "published to
the gateway", the most the system can know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from bookgen_events.bus import Commit, Entry, EventBus
from bookgen_events.consumer import default_consumer_name
from bookgen_events.db import (
    ensure_schema,
    get_engine,
    job_entity_id,
    notification_id,
    upsert_events,
    upsert_outcomes,
)
from bookgen_events.errors import BookgenEventsError, DecodeError
from bookgen_events.events import Event, EventType, decode
from bookgen_events.logs import get_logger
from bookgen_events.outcomes import DeadLetter, Outcome
from bookgen_events.settings import Settings

GROUP = "logger"
log = get_logger("consumers.logger")
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# Errors that say "the database is not there right now", not "this row is bad".
_DB_DOWN = (OperationalError, InterfaceError)


# -- rows ------------------------------------------------------------------------------------


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def render(event: Event) -> tuple[str, str]:
    """A plain subject and message for the row (the channels render their own bodies)."""
    d: Any = event.data
    job = f"Job {event.job_id}" if event.job_id else "Notification"
    if event.type is EventType.PROGRESS_UPDATE:
        subject = f"{job}: {d.progress:g}%" + (f" - {d.phase}" if d.phase else "")
        message = d.message or d.phase or f"Progress {d.progress:g}%"
    elif event.type is EventType.COMPLETION:
        subject = f"{job} {d.status}"
        who = f" of {d.character_name}" if d.character_name else ""
        message = f"Biography {d.biography_id or ''}{who} {d.status}.".replace("  ", " ")
    elif event.type is EventType.ERROR_ALERT:
        subject, message = f"[{d.severity}] {job} error", d.error
    elif event.type is EventType.STATUS_CHANGE:
        subject = f"{job} status: {d.old_status or '?'} -> {d.new_status}"
        message = subject
    else:
        subject, message = f"Admin alert: {d.alert_type}", d.message
    return subject[:255], message


def recipients(event: Event, channel: str) -> list[str]:
    """Who ``channel`` notifies: the watched job (else user), the webhook URL, each address."""
    if channel == "websocket":
        target = event.job_id or event.user_id
        return [target] if target else []
    if channel == "webhook":
        return [event.webhook_url] if event.webhook_url else []
    if channel == "email":
        return list(event.emails)
    return []


def _row(
    event_id: str, channel: str, recipient: str, job_id: str, user_id: str, stream_id: str
) -> dict[str, Any]:
    return {
        "id": notification_id(event_id, channel, recipient),
        "delivery_method": channel,
        "recipient": recipient[:255],
        "related_entity_type": "job" if job_id else None,
        "related_entity_id": job_entity_id(job_id),
        "notification_metadata": {
            "event_id": event_id,
            "stream_id": stream_id,
            "job_id": job_id or None,
            "user_id": user_id or None,
        },
        "subject": None,
        "message": None,
        "error_message": None,
        "delivered_at": None,
    }


def event_rows(event: Event, stream_id: str, channels: Sequence[str]) -> list[dict[str, Any]]:
    """One row per channel x recipient: ``pending``, or ``delivered`` for WebSocket."""
    subject, message = render(event)
    created = _naive_utc(event.occurred_at)
    out = []
    for channel in channels:
        for recipient in recipients(event, channel):
            row = _row(
                event.id, channel, recipient, event.job_id or "", event.user_id or "", stream_id
            )
            if event.data.metadata:
                row["notification_metadata"]["metadata"] = event.data.metadata
            broadcast = channel == "websocket"
            row.update(
                notification_type=event.type.value,
                subject=subject,
                message=message,
                status="delivered" if broadcast else "pending",
                delivery_attempts=1 if broadcast else 0,
                is_rate_limited=False,
                created_at=created,
                delivered_at=created if broadcast else None,
            )
            out.append(row)
    return out


def _uuid7_time(event_id: str) -> datetime | None:
    """The creation time inside a UUIDv7 event id (what ``emit`` assigns), else None."""
    try:
        value = uuid.UUID(event_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC).replace(tzinfo=None)


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """The row an outcome updates (or creates, when its event's row is not there yet).

    A failed attempt with a retry scheduled is still ``pending`` (with its error); a
    rate-limited attempt was never made, so it does not count in ``delivery_attempts``.
    """
    if outcome.status not in ("delivered", "failed", "rate_limited"):
        raise ValueError(f"unknown outcome status {outcome.status!r}")
    at = datetime.fromtimestamp(outcome.at_ms / 1000, UTC).replace(tzinfo=None)
    row = _row(
        outcome.event_id,
        outcome.channel,
        outcome.recipient,
        outcome.job_id,
        outcome.user_id,
        outcome.entry_id,
    )
    limited = outcome.status == "rate_limited"
    row.update(
        notification_type=outcome.type or None,
        status="pending" if outcome.status == "failed" and not outcome.final else outcome.status,
        delivery_attempts=outcome.attempt - 1 if limited else outcome.attempt,
        error_message=outcome.error or None,
        is_rate_limited=limited,
        # Until the event's row lands: the id's own time, the same for every outcome of it.
        created_at=_uuid7_time(outcome.event_id) or at,
        delivered_at=at if outcome.status == "delivered" else None,
    )
    return row


# -- the logger ------------------------------------------------------------------------------


class DatabaseUnavailable(BookgenEventsError):
    """The batch could not be written; its entries stay pending and are retried."""


@dataclass(slots=True)
class Parsed:
    """One stream entry turned into rows (or into a poison reason)."""

    stream: str
    entry_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    poison: str | None = None
    raw: str = ""


class NotificationLogger:
    """Projects both streams into the table; ``poll_once()`` is one batch, ``run()`` the loop."""

    def __init__(
        self,
        bus: EventBus,
        engine: Engine,
        *,
        name: str | None = None,
        channels: Sequence[str] = ("websocket", "webhook", "email"),
        batch: int = 500,
        claim_idle_ms: int = 60_000,
        block_ms: int = 500,
    ) -> None:
        self.bus = bus
        self.engine = engine
        self.name = name or default_consumer_name()
        self.channels = tuple(channels)
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.streams = (bus.names.events, bus.names.deliveries)
        self._held: list[tuple[str, Entry]] = []  # a batch the database refused, retried first
        self._own_pending = set(self.streams)  # streams whose own PEL is not yet redone
        self._claim_cursor = dict.fromkeys(self.streams, "0-0")
        self._next_claim = 0.0
        self._block_on = 0
        self._schema_ready = False
        self._last_db_error = ""
        self._log = log.bind(group=GROUP, consumer=self.name)

    @classmethod
    def from_settings(
        cls, bus: EventBus, settings: Settings, **overrides: Any
    ) -> NotificationLogger:
        channels = ["webhook"]
        if settings.websocket_enabled:
            channels.insert(0, "websocket")
        if settings.email_enabled:
            channels.append("email")
        options: dict[str, Any] = {
            "name": settings.consumer_name,
            "channels": channels,
            # A projection gains from big batches: one transaction per read, not per entry.
            "batch": max(settings.consumer_batch, 500),
            "claim_idle_ms": settings.claim_idle_ms,
            "block_ms": 500,
        }
        # ``concurrency`` (from ``consume --concurrency``) means nothing to a projection.
        options.update({k: v for k, v in overrides.items() if k in options and v is not None})
        return cls(bus, get_engine(settings.database_url), **options)

    async def start(self) -> None:
        for stream in self.streams:
            await self.bus.ensure_group(GROUP, stream=stream)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Project until ``stop`` is set (with ``burst``: until nothing is left to read now)."""
        await self.start()
        self._log.info("logger started", channels=list(self.channels))
        backoff = 0.1
        while not stop.is_set():
            try:
                seen = await self.poll_once(block_ms=None if burst else self.block_ms)
            except DatabaseUnavailable as exc:
                self._log.warning("database unavailable; batch kept", error=str(exc)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if burst and not seen:
                break
        self._log.info("logger stopped", held=len(self._held))

    async def poll_once(self, block_ms: int | None = None) -> int:
        """Read one batch (held, own pending, reclaimed, new), write it, ack it; returns entries.

        Raises :class:`DatabaseUnavailable` when the write fails; the batch is then held and
        retried by the next call, its entries unacknowledged.
        """
        batch = self._held or await self._read(block_ms)
        self._held = []
        if not batch:
            return 0
        parsed = await asyncio.to_thread(self._parse_and_write, batch)
        if parsed is None:
            self._held = batch
            raise DatabaseUnavailable(self._last_db_error)
        await self._ack(parsed)
        return len(batch)

    async def _read(self, block_ms: int | None) -> list[tuple[str, Entry]]:
        out: list[tuple[str, Entry]] = []
        try:
            for stream in list(self._own_pending):
                mine = await self.bus.read_group(
                    GROUP, self.name, count=self.batch, block_ms=None, stream=stream, pending=True
                )
                out += [(stream, e) for e in mine]
                if not mine:
                    self._own_pending.discard(stream)
            if time.monotonic() >= self._next_claim:
                out += await self._reclaim()
            for stream in self.streams:
                fresh = await self.bus.read_group(
                    GROUP, self.name, count=self.batch, block_ms=None, stream=stream
                )
                out += [(stream, e) for e in fresh]
            if not out and block_ms:
                # One BLOCK at a time, alternating streams: latency stays under block_ms.
                stream = self.streams[self._block_on]
                self._block_on ^= 1
                fresh = await self.bus.read_group(
                    GROUP, self.name, count=self.batch, block_ms=block_ms, stream=stream
                )
                out += [(stream, e) for e in fresh]
        except _REDIS_DOWN as exc:
            self._log.warning("redis unavailable", error=str(exc))
            await asyncio.sleep(0.5)
        return out

    async def _reclaim(self) -> list[tuple[str, Entry]]:
        """Take over entries a dead logger read but never acked (idle past claim_idle_ms)."""
        out: list[tuple[str, Entry]] = []
        wrapped = True
        for stream in self.streams:
            cursor, entries = await self.bus.autoclaim(
                GROUP,
                self.name,
                min_idle_ms=self.claim_idle_ms,
                start=self._claim_cursor[stream],
                count=self.batch,
                stream=stream,
            )
            self._claim_cursor[stream] = cursor
            wrapped = wrapped and cursor == "0-0"
            out += [(stream, e) for e in entries]
        if out:
            self._log.info("reclaimed idle entries", entries=len(out))
        if wrapped:
            self._next_claim = time.monotonic() + min(max(self.claim_idle_ms / 2000, 0.2), 30.0)
        return out

    async def _ack(self, parsed: list[Parsed]) -> None:
        for stream in self.streams:
            mine = [p for p in parsed if p.stream == stream]
            if not mine:
                continue
            letters = [
                DeadLetter(GROUP, p.entry_id, p.poison, 0, event=p.raw, poison=True)
                for p in mine
                if p.poison
            ]
            for letter in letters:
                self._log.warning(
                    "poison entry dead-lettered", entry_id=letter.entry_id, reason=letter.reason
                )
            commit = Commit([], letters, [], [], [p.entry_id for p in mine])
            try:
                await self.bus.commit(GROUP, commit, GROUP, stream=stream)
            except _REDIS_DOWN as exc:
                # Rows are written; the entries stay pending and come back idempotently.
                self._log.warning("ack failed; entries will be redone", error=str(exc))

    # -- projecting (runs in a worker thread) ------------------------------------------------

    def parse(self, stream: str, entry: Entry) -> Parsed:
        entry_id, fields = entry
        item = Parsed(stream, entry_id)
        try:
            if stream == self.bus.names.events:
                item.events = event_rows(decode(fields), entry_id, self.channels)
            else:
                item.outcomes = [outcome_row(Outcome.from_fields(fields))]
        except (DecodeError, KeyError, ValueError, TypeError) as exc:
            item.poison = f"{stream} entry: {exc}"[:1000]
            item.raw = json.dumps(fields, default=str)
        return item

    def _parse_and_write(self, batch: list[tuple[str, Entry]]) -> list[Parsed] | None:
        parsed = [self.parse(stream, entry) for stream, entry in batch]
        try:
            try:
                self.write(parsed)
            except _DB_DOWN:
                raise
            except SQLAlchemyError:
                # A row the database refuses (a value out of range...): isolate its entry.
                for item, (_, (_, fields)) in zip(parsed, batch, strict=True):
                    try:
                        self.write([item])
                    except _DB_DOWN:
                        raise
                    except SQLAlchemyError as exc:
                        item.poison = f"database refused its rows: {exc}"[:1000]
                        item.raw = json.dumps(fields, default=str)
        except _DB_DOWN as exc:
            self._schema_ready = False  # a table dropped meanwhile is recreated on the retry
            self._last_db_error = str(exc.orig if isinstance(exc, DBAPIError) else exc)[:500]
            return None
        return parsed

    def write(self, parsed: Sequence[Parsed]) -> None:
        """One transaction: every event row, then every outcome row, in entry order."""
        if not self._schema_ready:
            ensure_schema(self.engine, force=True)
            self._schema_ready = True
        events = [row for p in parsed if not p.poison for row in p.events]
        outcomes = [row for p in parsed if not p.poison for row in p.outcomes]
        with self.engine.begin() as conn:
            upsert_events(conn, events)
            upsert_outcomes(conn, outcomes)


async def serve(bus: EventBus, settings: Settings, stop: asyncio.Event, **overrides: Any) -> None:
    """Worker entry for ``bookgen-events consume logger`` and ``up``."""
    if not settings.enable_notification_logging:
        log.info("notification logging is off (ENABLE_NOTIFICATION_LOGGING=false)")
        return
    await NotificationLogger.from_settings(bus, settings, **overrides).run(stop)


async def rebuild(bus: EventBus, settings: Settings, *, chunk: int = 1000) -> dict[str, Any]:
    """Re-apply every entry the streams still hold to the table, idempotently.

    Events first, then outcomes, through the same upserts as the live logger, so running it
    on a live table, twice, or beside a running logger changes nothing that is already right.
    Rows of events already trimmed from the streams are kept.
    """
    logger = NotificationLogger.from_settings(bus, settings)
    counts = {"events": 0, "outcomes": 0, "rows": 0, "poison": 0}
    for stream, kind in ((bus.names.events, "events"), (bus.names.deliveries, "outcomes")):
        start = "-"
        while entries := await bus.range(start, "+", count=chunk, stream=stream):
            parsed = [logger.parse(stream, entry) for entry in entries]
            await asyncio.to_thread(logger.write, parsed)
            counts[kind] += sum(1 for p in parsed if not p.poison)
            counts["poison"] += sum(1 for p in parsed if p.poison)
            counts["rows"] += sum(len(p.events) + len(p.outcomes) for p in parsed)
            start = f"({entries[-1][0]}"
    log.info("notification log rebuilt", **counts)
    return {**counts, "database": logger.engine.url.render_as_string(hide_password=True)}
