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
It reads through the same :class:`~bookgen_events.reader.GroupReader` (own pending entries
first, reclaims, a lost group recreated, a pause while Redis is down), one per stream.

WebSocket rows are written ``delivered`` at the event's time: the gateway broadcasts every
event it reads and reports no per-client outcome, so "delivered" here means "published to
the gateway", the most the system can know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from bookgen_events.bus import Commit, Entry, EventBus
from bookgen_events.cancelling import cancel_and_wait
from bookgen_events.channel import CHANNELS
from bookgen_events.db import (
    delete_rows_before,
    ensure_schema,
    get_engine,
    upsert_events,
    upsert_outcomes,
)
from bookgen_events.errors import BookgenEventsError, DecodeError
from bookgen_events.events import decode
from bookgen_events.logs import get_logger
from bookgen_events.outcomes import DeadLetter, Outcome
from bookgen_events.reader import REDIS_DOWN, GroupReader, default_consumer_name
from bookgen_events.retention import TRIM_INTERVAL_S
from bookgen_events.settings import Settings

from .logrows import event_rows, outcome_row

GROUP = "logger"
log = get_logger("consumers.logger")
# Errors that say "the database is not there right now", not "this row is bad".
_DB_DOWN = (OperationalError, InterfaceError)


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
        channels: Sequence[str] = CHANNELS,
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
        # Every partition's events and outcomes (STREAM_PARTITIONS), each acked through its
        # partition's bus so a commit's keys share one slot.
        self._bus_of = {
            stream: part
            for part in bus.partitions
            for stream in (part.names.events, part.names.deliveries)
        }
        self.streams = tuple(self._bus_of)
        self._event_streams = {part.names.events for part in bus.partitions}
        self._held: list[tuple[str, Entry]] = []  # a batch the database refused, retried first
        self._next_claim = 0.0
        self._block_on = 0
        self._schema_ready = False
        self._last_db_error = ""
        self._log = log.bind(group=GROUP, consumer=self.name)
        self._readers = {
            stream: GroupReader(
                self._bus_of[stream],
                GROUP,
                self.name,
                claim_idle_ms=claim_idle_ms,
                log=self._log,
                stream=stream,
            )
            for stream in self.streams
        }

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
        for reader in self._readers.values():
            await reader.ensure()

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
        """Own pending entries, reclaimed ones, then new ones, from both streams; what was
        read so far once Redis turns out to be unreachable."""
        out: list[tuple[str, Entry]] = []
        readers = self._readers
        for stream, reader in readers.items():
            if not reader.pending_done:
                out += [(stream, e) for e in await reader.own_pending(self.batch)]
                if reader.down:
                    return out
        if time.monotonic() >= self._next_claim:
            out += await self._reclaim()
            if any(reader.down for reader in readers.values()):
                return out
        for stream, reader in readers.items():
            out += [(stream, e) for e in await reader.new(self.batch)]
            if reader.down:
                return out
        if not out and block_ms:
            # One BLOCK at a time, alternating streams: latency stays under block_ms.
            stream = self.streams[self._block_on]
            self._block_on = (self._block_on + 1) % len(self.streams)
            out += [(stream, e) for e in await readers[stream].new(self.batch, block_ms)]
        return out

    async def _reclaim(self) -> list[tuple[str, Entry]]:
        """Take over entries a dead logger read but never acked (idle past claim_idle_ms)."""
        out: list[tuple[str, Entry]] = []
        for stream, reader in self._readers.items():
            out += [(stream, e) for e in await reader.reclaim(self.batch)]
            if reader.down:
                return out
        if out:
            self._log.info("reclaimed idle entries", entries=len(out))
        if all(reader.wrapped for reader in self._readers.values()):
            self._next_claim = time.monotonic() + self._readers[self.streams[0]].claim_every
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
                await self._bus_of[stream].commit(GROUP, commit, GROUP, stream=stream)
            except REDIS_DOWN as exc:
                # Rows are written; the entries stay pending and come back idempotently.
                self._log.warning("ack failed; entries will be redone", error=str(exc))

    # -- projecting (runs in a worker thread) ------------------------------------------------

    def parse(self, stream: str, entry: Entry) -> Parsed:
        entry_id, fields = entry
        item = Parsed(stream, entry_id)
        try:
            if stream in self._event_streams:
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


async def keep_log_trimmed(
    engine: Engine, retention_s: float, stop: asyncio.Event, interval_s: float = TRIM_INTERVAL_S
) -> None:
    """Delete log rows older than ``retention_s`` every ``interval_s`` until ``stop`` (in a
    thread: the database driver blocks), in small batches."""
    while not stop.is_set():
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=retention_s)
        try:
            removed = await asyncio.to_thread(delete_rows_before, engine, cutoff)
            if removed:
                log.info("log rows deleted by age", rows=removed)
        except SQLAlchemyError as exc:
            log.warning("deleting old log rows failed", error=str(exc)[:300])
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass


async def serve(bus: EventBus, settings: Settings, stop: asyncio.Event, **overrides: Any) -> None:
    """Worker entry for ``bookgen-events consume logger`` and ``up``."""
    if not settings.enable_notification_logging:
        log.info("notification logging is off (ENABLE_NOTIFICATION_LOGGING=false)")
        return
    logger = NotificationLogger.from_settings(bus, settings, **overrides)
    if settings.log_retention is None:
        await logger.run(stop)
        return
    # LOG_RETENTION (SPEC 11): old rows deleted in small batches beside the projection.
    trimmer = asyncio.create_task(keep_log_trimmed(logger.engine, settings.log_retention, stop))
    try:
        await logger.run(stop)
    finally:
        await cancel_and_wait([trimmer])


async def rebuild(bus: EventBus, settings: Settings, *, chunk: int = 1000) -> dict[str, Any]:
    """Re-apply every entry the streams still hold to the table, idempotently.

    Events first, then outcomes, through the same upserts as the live logger, so running it
    on a live table, twice, or beside a running logger changes nothing that is already right.
    Rows of events already trimmed from the streams are kept. ``rows`` counts the table rows
    written (each once: an event's row and its outcomes' updates are one row). A database
    that cannot be reached raises :class:`DatabaseUnavailable`.
    """
    logger = NotificationLogger.from_settings(bus, settings)
    counts = {"events": 0, "outcomes": 0, "rows": 0, "poison": 0}
    written: set[int] = set()

    async def attempt(write: Callable[..., None], *args: Any) -> None:
        try:
            await asyncio.to_thread(write, *args)
        except _DB_DOWN as exc:
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            raise DatabaseUnavailable(str(reason)[:500]) from exc

    # An unreachable database fails here, even with nothing to write.
    await attempt(lambda: ensure_schema(logger.engine, force=True))
    sources = [(p.names.events, "events") for p in bus.partitions]
    sources += [(p.names.deliveries, "outcomes") for p in bus.partitions]
    for stream, kind in sources:
        start = "-"
        while entries := await bus.range(start, "+", count=chunk, stream=stream):
            parsed = [logger.parse(stream, entry) for entry in entries]
            await attempt(logger.write, parsed)
            good = [p for p in parsed if not p.poison]
            counts[kind] += len(good)
            counts["poison"] += len(parsed) - len(good)
            written.update(row["id"] for p in good for row in (*p.events, *p.outcomes))
            start = f"({entries[-1][0]}"
    counts["rows"] = len(written)
    log.info("notification log rebuilt", **counts)
    return {**counts, "database": logger.engine.url.render_as_string(hide_password=True)}
