"""Replay from stream offsets, dead-letter redrive and group backfill, one channel at a time.

Replay and redrive go through the channel's scheduled-delivery set with each event's
original id, so ``webhook-id`` and ``Message-ID`` stay the same and receivers can
de-duplicate; the consumer records outcomes as for any delivery, and the log upserts rather
than duplicates rows. :func:`position_group` moves a consumer group's read position on
purpose (``consume CHANNEL --from``): a new group starts at the end of the stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import get_args

from .bus import EventBus, Scheduled
from .channel import GROUP_CHANNELS
from .endpoint_index import EndpointIndex
from .endpoints import EndpointRegistry, EndpointType
from .errors import OffsetError
from .events import WIRE_FIELD, Event, decode
from .outcomes import now_ms
from .subscriber_index import SubscriberIndex
from .subscribers import SubscriberRegistry

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")
_MAX_SEQ = (1 << 64) - 1

Recipients = Callable[[Event], Sequence[str]]


def event_recipients(channel: str) -> Recipients:
    """Who ``channel`` delivers an event to, from the event's own fields (as the channels
    do): its ``webhook_url`` for webhook, its ``emails`` for email, its ``phones`` for sms."""
    if channel == "webhook":
        return lambda event: [event.webhook_url] if event.webhook_url else []
    if channel == "email":
        return lambda event: list(event.emails)
    if channel == "sms":
        return lambda event: list(event.phones)
    raise OffsetError(f"no recipients are known for channel {channel!r}")


async def routed_recipients(bus: EventBus, channel: str) -> Recipients:
    """Who ``channel`` delivers an event to now, routing included: the event's own fields,
    plus the registered endpoints that want it (webhook) or its subscriber's address (email, sms),
    read from the registries as they stand."""
    own = event_recipients(channel)
    if channel == "webhook":
        endpoints = EndpointIndex(EndpointRegistry.for_prefix(bus.redis, bus.names.prefix))
        await endpoints.load()
        kinds = get_args(EndpointType)
        return lambda event: [
            *own(event),
            *(r for kind in kinds for r in endpoints.recipients(event, kind)),
        ]
    if channel == "email":
        subscribers = SubscriberIndex(SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix))
        await subscribers.load()
        return lambda event: subscribers.route(event, "email", list(own(event)))
    if channel == "sms":
        subscribers = SubscriberIndex(SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix))
        await subscribers.load()
        return lambda event: subscribers.route(event, "sms", list(own(event)))
    return own


def parse_time_ms(text: str) -> int:
    """An ISO 8601 time (UTC unless it says otherwise) as Unix milliseconds."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise OffsetError(f"{text!r} is not an ISO time (like 2024-01-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_offset(text: str, *, end: bool = False) -> str:
    """A stream id (``1700000000000-0``) or an ISO 8601 time, as an inclusive stream id."""
    text = text.strip()
    if _STREAM_ID.match(text):
        return text
    try:
        ms = parse_time_ms(text)
    except OffsetError:
        raise OffsetError(
            f"{text!r} is neither a stream id (like 1700000000000-0) nor an ISO time "
            "(like 2024-01-01T12:00:00Z)"
        ) from None
    return f"{ms}-{_MAX_SEQ if end else 0}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class ReplayResult:
    channel: str
    start: str
    end: str
    scanned: int = 0
    matched: int = 0
    scheduled: int = 0
    skipped_poison: int = 0
    no_recipient: int = 0  # matched the filters, but the channel has no one to send it to
    first_retained: str | None = None
    dry_run: bool = False
    event_ids: list[str] = field(default_factory=list)


async def replay(
    bus: EventBus,
    channel: str,
    start: str,
    end: str = "+",
    *,
    job_id: str | None = None,
    type_: str | None = None,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    chunk: int = 1000,
    recipients: Recipients | None = None,
    only: str | None = None,
) -> ReplayResult:
    """Schedule every retained event in ``[start, end]`` matching the filters for ``channel``.

    Only events the channel has a recipient for count and are scheduled (``recipients``,
    default :func:`routed_recipients`): an event with neither a ``webhook_url`` nor an
    endpoint that wants it is no webhook redelivery. With ``only``, each is redelivered to that one recipient (an endpoint),
    else to every recipient the channel finds for it then.
    """
    if channel not in GROUP_CHANNELS:
        raise OffsetError(
            f"replay delivers to {' or '.join(GROUP_CHANNELS)}; the log is rebuilt with "
            "`bookgen-events rebuild-log`, and WebSocket clients resume with last_event_id"
        )
    parts = bus.partitions  # STREAM_PARTITIONS: each partition's range, into its own set
    firsts = [entries[0][0] for part in parts if (entries := await part.range(count=1))]
    lasts = [entries[0][0] for part in parts if (entries := await part.revrange(count=1))]
    if not firsts:
        raise OffsetError("the event stream is empty: nothing to replay")
    lo = parse_offset(start)
    hi = "+" if end in ("+", "") else parse_offset(end, end=True)
    first_id, last_id = min(firsts, key=_id_key), max(lasts, key=_id_key)
    if hi != "+" and _id_key(lo) > _id_key(hi):
        raise OffsetError(f"--from {start} is after --to {end}")
    if _id_key(lo) > _id_key(last_id):
        raise OffsetError(f"--from {start} is after the newest event ({last_id})")
    if hi != "+" and _id_key(hi) < _id_key(first_id):
        raise OffsetError(
            f"--to {end} is before the oldest retained event ({first_id}); older events "
            "were trimmed (STREAM_MAXLEN)"
        )
    result = ReplayResult(channel, lo, hi, first_retained=first_id, dry_run=dry_run)
    targets = recipients or await routed_recipients(bus, channel)
    total = max(sum([await part.length() for part in parts]), 1)
    for part in parts:
        await _replay_part(part, result, targets, job_id, type_, only, chunk, total, on_progress)
    return result


async def _replay_part(
    part: EventBus,
    result: ReplayResult,
    targets: Recipients,
    job_id: str | None,
    type_: str | None,
    only: str | None,
    chunk: int,
    total: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """:func:`replay` over one partition's stream, scheduled into that partition's set (its
    consumers deliver it, and its commit keys share one slot)."""
    lo, hi = result.start, result.end
    cursor = lo
    while True:
        entries = await part.range(cursor, hi, count=chunk)
        if cursor != lo:
            entries = entries[1:]  # the cursor entry was handled in the previous chunk
        if not entries:
            break
        batch: list[tuple[Scheduled, int]] = []
        for entry_id, fields in entries:
            result.scanned += 1
            try:
                event = decode(fields)
            except ValueError:
                result.skipped_poison += 1
                continue
            if (job_id and event.job_id != job_id) or (type_ and event.type.value != type_):
                continue
            if not targets(event):
                result.no_recipient += 1
                continue
            result.matched += 1
            result.event_ids.append(event.id)
            batch.append((Scheduled(fields[WIRE_FIELD], entry_id, 1, only, "replay"), now_ms()))
        if batch and not result.dry_run:
            result.scheduled += await part.scheduled.add(result.channel, batch)
        cursor = entries[-1][0]
        if on_progress:
            on_progress(result.scanned, total)


# -- consumer group positions ------------------------------------------------------------------


def before(entry_id: str) -> str:
    """The greatest stream id below ``entry_id`` (``0-0`` at the bottom)."""
    ms, seq = _id_key(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"


def group_start(text: str) -> str:
    """``consume --from``: ``0`` (everything retained), ``$`` (only new events), a stream id
    or an ISO time (inclusive), as the group's last-delivered id."""
    text = text.strip()
    if text in ("0", "0-0", "$"):
        return text if text != "0" else "0-0"
    return before(parse_offset(text))


@dataclass
class GroupPosition:
    """What :func:`position_group` did on one stream."""

    stream: str
    group: str
    created: bool
    previous: str | None  # the group's last-delivered id before, if it existed
    position: str  # its last-delivered id now

    def describe(self) -> str:
        start = "every retained entry" if self.position == "0-0" else f"after {self.position}"
        if self.created:
            return f"created group {self.group} on {self.stream}: it reads {start}"
        return (
            f"moved group {self.group} on {self.stream} from {self.previous} to "
            f"{self.position}: it reads {start}"
        )


async def _last_delivered(bus: EventBus, stream: str, group: str) -> str | None:
    for info in await bus.groups_info(stream):
        if info["name"] == group:
            return str(info.get("last-delivered-id"))
    return None


async def position_group(
    bus: EventBus, group: str, start: str, streams: Sequence[str] | None = None
) -> list[GroupPosition]:
    """Create ``group`` at ``start`` (see :func:`group_start`), or move it there if it exists.

    Entries the group already read and has not acknowledged stay pending (nothing is lost);
    moving back makes it read entries again, which the channels' idempotency absorbs.
    """
    last_id = group_start(start)
    out = []
    for stream in streams or [bus.names.events]:
        previous = await _last_delivered(bus, stream, group)
        created = await bus.place_group(group, last_id, stream)
        now = await _last_delivered(bus, stream, group)
        out.append(GroupPosition(stream, group, created, previous, now or last_id))
    return out
