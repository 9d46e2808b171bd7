"""Quiet hours (SPEC 9): when a subscriber's local night ends, in their time zone, DST included.

``start`` after ``end`` spans midnight (22:00-07:00). The end is computed as a local wall-clock
time on the right date and only then converted to UTC, so the night a clock changes ends at
07:00 local all the same (one hour earlier or later in UTC). A critical error alert is never
held back.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .events import Event, EventType
from .subscribers import QuietHours


def is_critical(event: Event) -> bool:
    """A critical error alert: it goes at once, quiet hours or digests notwithstanding."""
    return (
        event.type == EventType.ERROR_ALERT and getattr(event.data, "severity", None) == "critical"
    )


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_until(quiet: QuietHours, now: datetime) -> datetime | None:
    """When the quiet hours holding ``now`` (aware) end, in UTC; None outside them."""
    zone = ZoneInfo(quiet.tz)
    local = now.astimezone(zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    clock = local.time().replace(second=0, microsecond=0, tzinfo=None)
    if start == end:
        return None
    if start < end:  # the same day, e.g. 13:00-14:00
        inside = start <= clock < end
        end_day = local.date()
    else:  # across midnight, e.g. 22:00-07:00
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
