"""The accounting invariant: every event, on every channel, ends somewhere we can see.

:func:`reconcile` compares what was emitted with what the system recorded (final outcomes in
``bookgen:deliveries``, dead letters in ``bookgen:dlq:<channel>``, the ``notifications``
table) and with what the real peers received (webhook ids, SMTP Message-IDs and recipients,
WebSocket messages). A delivery is *lost* when it has no final outcome and no dead letter,
or when its outcome says ``delivered`` but the peer never got it. Duplicates (at-least-once
allows them) are counted, never treated as errors.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.exc import DBAPIError

from bookgen_events import Event, EventBus
from bookgen_events.db import Notification
from bookgen_events.outcomes import DeadLetter, Outcome

TABLE = Notification.__table__  # type: ignore[attr-defined]
Pair = tuple[str, str]  # (event id, recipient)
_MESSAGE_ID = re.compile(rb"^Message-ID: <([^@>]+)@", re.MULTILINE)


@dataclass
class ChannelReport:
    """One channel's accounting."""

    expected: int = 0
    delivered: int = 0
    rate_limited: int = 0
    suppressed: int = 0
    dead_lettered: int = 0
    lost: list[Pair] = field(default_factory=list)
    duplicates: int = 0  # extra receipts at the peer
    duplicate_outcomes: int = 0  # extra final outcomes in bookgen:deliveries
    retries: int = 0  # non-final failed outcomes (proof a fault was felt)
    db_mismatches: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The reconciliation of one run: per channel, plus totals."""

    channels: dict[str, ChannelReport]
    took_s: float = 0.0

    @property
    def lost(self) -> int:
        return sum(len(c.lost) for c in self.channels.values())

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.channels.values())

    @property
    def db_mismatches(self) -> int:
        return sum(len(c.db_mismatches) for c in self.channels.values())

    @property
    def settled(self) -> bool:
        return self.lost == 0 and self.db_mismatches == 0

    def summary(self) -> str:
        lines = [
            f"lost={self.lost} duplicates={self.duplicates} db_mismatches={self.db_mismatches}"
        ]
        for name, c in self.channels.items():
            lines.append(
                f"  {name:<9} expected={c.expected} delivered={c.delivered} "
                f"rate_limited={c.rate_limited} suppressed={c.suppressed} dead_lettered={c.dead_lettered} "
                f"lost={len(c.lost)} duplicates={c.duplicates} "
                f"duplicate_outcomes={c.duplicate_outcomes} retries={c.retries} "
                f"db_mismatches={len(c.db_mismatches)}"
                + (f" first lost={c.lost[:3]}" if c.lost else "")
                + (f" first mismatch={c.db_mismatches[:3]}" if c.db_mismatches else "")
            )
        return "\n".join(lines)


@dataclass
class Seen:
    """What the real peers received."""

    webhook: Counter[str]  # event id -> 2xx answers
    email: Counter[Pair]  # (event id, recipient) -> accepted messages
    websocket: Counter[str]  # event id -> WebSocket messages (watched jobs only)


def smtp_seen(received: Iterable[Any]) -> Counter[Pair]:
    """(event id, recipient) counts from aiosmtpd transactions (Message-ID is ``<event id@..>``)."""
    seen: Counter[Pair] = Counter()
    for item in received:
        match = _MESSAGE_ID.search(item.data)
        if match:
            for rcpt in item.rcpt_tos:
                seen[(match.group(1).decode(), rcpt)] += 1
    return seen


async def _read_all(bus: EventBus, stream: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    start = "-"
    while entries := await bus.range(start, "+", count=5000, stream=stream):
        out += [fields for _, fields in entries]
        start = f"({entries[-1][0]}"
    return out


def _db_rows(database_url: str) -> dict[tuple[str, str, str], str] | None:
    """(event id, channel, recipient) -> status from the notifications table; None if unreadable."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            c = TABLE.c
            query = select(c.delivery_method, c.recipient, c.status, c.notification_metadata)
            rows = conn.execute(query).all()
    except DBAPIError:  # unreachable, or the logger has not created the table yet
        return None
    finally:
        engine.dispose()
    return {((meta or {}).get("event_id", ""), ch, rcpt): status for ch, rcpt, status, meta in rows}


async def reconcile(
    bus: EventBus,
    events: Sequence[Event],
    seen: Seen,
    *,
    database_url: str | None,
    watched_jobs: Iterable[str] = (),
) -> Report:
    """Account for every (event, channel, recipient) of ``events``; see the module docstring."""
    wanted = {e.id for e in events}
    finals: dict[str, dict[Pair, list[str]]] = {"webhook": {}, "email": {}}
    retries: Counter[str] = Counter()
    for fields in await _read_all(bus, bus.names.deliveries):
        outcome = Outcome.from_fields(fields)
        if outcome.event_id not in wanted or outcome.channel not in finals:
            continue
        if outcome.final:
            finals[outcome.channel].setdefault((outcome.event_id, outcome.recipient), []).append(
                outcome.status
            )
        elif outcome.status == "failed":
            retries[outcome.channel] += 1
    dead: dict[str, set[Pair]] = {}
    for channel in finals:
        letters = [DeadLetter.from_fields(f) for f in await _read_all(bus, bus.names.dlq(channel))]
        dead[channel] = {(d.event_id, d.recipient) for d in letters if d.event_id in wanted}
    rows = await asyncio.to_thread(_db_rows, database_url) if database_url else None

    expected: dict[str, list[Pair]] = {
        "webhook": [(e.id, e.webhook_url) for e in events if e.webhook_url],
        "email": [(e.id, r) for e in events for r in e.emails],
    }
    watched = set(watched_jobs)
    ws_expected = [e.id for e in events if e.job_id in watched]

    report = Report({})
    for channel, pairs in expected.items():
        rep = report.channels[channel] = ChannelReport(
            expected=len(pairs), retries=retries[channel]
        )
        for pair in pairs:
            statuses = finals[channel].get(pair, [])
            received = seen.webhook[pair[0]] if channel == "webhook" else seen.email[pair]
            rep.duplicates += max(received - 1, 0)
            rep.duplicate_outcomes += max(len(statuses) - 1, 0)
            if "delivered" in statuses:
                rep.delivered += 1
                want = "delivered"
                if not received:
                    rep.lost.append(pair)  # claimed delivered, never arrived
            elif pair in dead[channel]:
                rep.dead_lettered += 1
                want = "failed"
            elif "rate_limited" in statuses:
                rep.rate_limited += 1
                want = "rate_limited"
            elif "suppressed" in statuses:
                rep.suppressed += 1
                want = "suppressed"
            else:
                rep.lost.append(pair)
                continue
            if rows is not None:
                got = rows.get((pair[0], channel, pair[1]))
                if got != want:
                    rep.db_mismatches.append(f"{pair[0]} {pair[1]}: table says {got}, not {want}")
        if rows is None and database_url:
            rep.db_mismatches.append("notifications table unreadable")

    ws = report.channels["websocket"] = ChannelReport(expected=len(ws_expected))
    for event_id in ws_expected:
        count = seen.websocket[event_id]
        ws.duplicates += max(count - 1, 0)
        if count:
            ws.delivered += 1
        else:
            ws.lost.append((event_id, "websocket"))
    if rows is not None:
        for e in events:
            got = rows.get((e.id, "websocket", e.job_id or e.user_id or ""))
            if got != "delivered":
                ws.db_mismatches.append(f"{e.id}: table says {got}, not delivered")
    return report


async def settle(
    bus: EventBus,
    events: Sequence[Event],
    seen: Any,
    *,
    database_url: str | None,
    watched_jobs: Iterable[str] = (),
    within: float = 30.0,
) -> Report:
    """Reconcile until nothing is lost and the table agrees, or ``within`` s pass; the last report.

    ``seen`` is a callable returning a fresh :class:`Seen` (the peers keep receiving).
    """
    started = time.monotonic()
    jobs = list(watched_jobs)
    while True:
        report = await reconcile(bus, events, seen(), database_url=database_url, watched_jobs=jobs)
        report.took_s = time.monotonic() - started
        if report.settled or report.took_s > within:
            return report
        await asyncio.sleep(0.25)
