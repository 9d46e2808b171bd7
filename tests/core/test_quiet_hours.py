"""Quiet hours end at the subscriber's local time, whatever the clocks do that night."""

from __future__ import annotations

from datetime import UTC, datetime

from bookgen_events.events import Event
from bookgen_events.quiet_hours import is_critical, quiet_until
from bookgen_events.subscribers import QuietHours

NIGHT = QuietHours(start="22:00", end="07:00", tz="Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_night_the_clocks_go_forward_ends_at_seven_local() -> None:
    """2026-03-29 02:00 CET -> 03:00 CEST: 07:00 local is 05:00 UTC, not 06:00."""
    assert quiet_until(NIGHT, utc(2026, 3, 28, 22, 0)) == utc(2026, 3, 29, 5, 0)
    assert quiet_until(NIGHT, utc(2026, 3, 29, 4, 59)) == utc(2026, 3, 29, 5, 0)
    assert quiet_until(NIGHT, utc(2026, 3, 29, 5, 0)) is None  # 07:00 CEST: morning


def test_the_night_the_clocks_go_back_ends_at_seven_local() -> None:
    """2026-10-25 03:00 CEST -> 02:00 CET: 07:00 local is 06:00 UTC, not 05:00."""
    assert quiet_until(NIGHT, utc(2026, 10, 24, 21, 0)) == utc(2026, 10, 25, 6, 0)
    assert quiet_until(NIGHT, utc(2026, 10, 25, 5, 30)) == utc(2026, 10, 25, 6, 0)
    assert quiet_until(NIGHT, utc(2026, 10, 24, 19, 59)) is None  # 21:59 CEST: evening


def test_a_window_within_one_day_and_the_edges() -> None:
    lunch = QuietHours(start="12:00", end="13:30", tz="Asia/Kolkata")  # UTC+05:30
    assert quiet_until(lunch, utc(2026, 6, 1, 6, 30)) == utc(2026, 6, 1, 8, 0)  # 12:00 local
    assert quiet_until(lunch, utc(2026, 6, 1, 8, 0)) is None  # 13:30: over
    assert quiet_until(lunch, utc(2026, 6, 1, 6, 29)) is None  # 11:59: not yet
    assert quiet_until(QuietHours(start="08:00", end="08:00"), utc(2026, 6, 1, 8, 0)) is None


def test_only_a_critical_error_alert_is_critical() -> None:
    def alert(severity: str) -> Event:
        return Event(type="error_alert", job_id="1", data={"error": "x", "severity": severity})

    assert is_critical(alert("critical"))
    assert not is_critical(alert("error"))
    assert not is_critical(Event(type="completion", job_id="1", data={}))
