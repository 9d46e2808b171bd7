"""Records written beside the event stream: delivery outcomes and dead letters.

Each is a flat dict of strings on the wire so ``redis-cli XRANGE`` shows it plainly.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["delivered", "failed", "rate_limited", "suppressed"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: The outcome record's one definition: its fields in order, those always written first, then
#: those written only when not empty. The commit script gets the names and the count of
#: ``OUTCOME_ALWAYS`` injected at load (``scripts/commit.lua``); :func:`outcome_record` writes
#: the values positionally, as it runs once per delivery, and ``tests/core/test_outcomes.py``
#: holds it to this order field by field.
OUTCOME_ALWAYS = (
    "event_id", "entry_id", "channel", "recipient", "status", "attempt", "final", "type",
    "job_id", "duration_ms", "at_ms",
)  # fmt: skip
OUTCOME_OPTIONAL = ("user_id", "error", "status_code", "latency_ms", "retry_at_ms")
OUTCOME_FIELDS = OUTCOME_ALWAYS + OUTCOME_OPTIONAL

#: An outcome as the commit script takes it: the values of ``OUTCOME_FIELDS`` in one string,
#: each ended by ``RECORD_SEP`` ("" for none), or, if a value holds that separator, a JSON
#: array of them. The script splits it and adds the field names: one argument per delivery
#: for the client to pack rather than 32.
OutcomeRecord = str
RECORD_SEP = "\x1f"  # ASCII unit separator


def outcome_record(
    event_id: str,
    entry_id: str,
    channel: str,
    recipient: str,
    status: Status,
    attempt: int,
    final: bool,
    type_: str,
    job_id: str,
    user_id: str = "",
    *,
    error: str = "",
    status_code: int | None = None,
    duration_ms: float = 0.0,
    latency_ms: float | None = None,
    retry_at_ms: int | None = None,
    at_ms: int = 0,
) -> OutcomeRecord:
    """One outcome, ready for the commit script; :meth:`Outcome.from_fields` reads it back.

    Built directly rather than through an :class:`Outcome`: it runs once per delivery.
    """
    values = (
        event_id, entry_id, channel, recipient, status, str(attempt), "1" if final else "0",
        type_, job_id, f"{duration_ms:.3f}", str(at_ms or now_ms()), user_id, error,
        "" if status_code is None else str(status_code),
        "" if latency_ms is None else f"{latency_ms:.3f}",
        "" if retry_at_ms is None else str(retry_at_ms),
    )  # fmt: skip
    record = RECORD_SEP.join(values) + RECORD_SEP
    if record.count(RECORD_SEP) != _WIDTH or record[0] == "[":
        # A value holds the separator (a job id or an error text can hold anything), or the
        # record would read as JSON.
        return json.dumps(values)
    return record


def record_values(record: OutcomeRecord) -> dict[str, str]:
    """The fields of ``record`` by name, every one (the commit script's reading, in Python)."""
    values = json.loads(record) if record[0] == "[" else record.split(RECORD_SEP)[:-1]
    return dict(zip(OUTCOME_FIELDS, values, strict=True))


_WIDTH = len(OUTCOME_FIELDS)


@dataclass(slots=True)  # not frozen: frozen dataclasses set each field via object.__setattr__
class Outcome:
    """One delivery attempt of one event to one recipient on one channel.

    ``final`` is false only for a failed attempt with a retry scheduled at ``retry_at_ms``;
    a final ``failed`` outcome means the delivery was dead-lettered.
    """

    event_id: str
    entry_id: str
    channel: str
    recipient: str
    status: Status
    attempt: int
    final: bool
    type: str = ""
    job_id: str = ""
    user_id: str = ""
    error: str = ""
    status_code: int | None = None
    duration_ms: float = 0.0
    latency_ms: float | None = None
    retry_at_ms: int | None = None
    at_ms: int = field(default_factory=now_ms)

    def record(self) -> OutcomeRecord:
        return outcome_record(
            self.event_id,
            self.entry_id,
            self.channel,
            self.recipient,
            self.status,
            self.attempt,
            self.final,
            self.type,
            self.job_id,
            self.user_id,
            error=self.error,
            status_code=self.status_code,
            duration_ms=self.duration_ms,
            latency_ms=self.latency_ms,
            retry_at_ms=self.retry_at_ms,
            at_ms=self.at_ms,
        )

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Outcome:
        """Parse an entry of the deliveries stream (raises ``KeyError``/``ValueError`` if bad)."""

        def opt_int(name: str) -> int | None:
            return int(fields[name]) if fields.get(name) else None

        latency = fields.get("latency_ms")
        return cls(
            event_id=fields["event_id"],
            entry_id=fields.get("entry_id", ""),
            channel=fields["channel"],
            recipient=fields["recipient"],
            status=fields["status"],  # type: ignore[arg-type]
            attempt=int(fields["attempt"]),
            final=fields.get("final", "1") == "1",
            type=fields.get("type", ""),
            job_id=fields.get("job_id", ""),
            user_id=fields.get("user_id", ""),
            error=fields.get("error", ""),
            status_code=opt_int("status_code"),
            duration_ms=float(fields.get("duration_ms", 0.0)),
            latency_ms=float(latency) if latency else None,
            retry_at_ms=opt_int("retry_at_ms"),
            at_ms=int(fields.get("at_ms", 0)),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry a channel gave up on: the event (or the raw poison fields) and why."""

    channel: str
    entry_id: str
    reason: str
    attempts: int
    event_id: str = ""
    recipient: str = ""
    event: str = ""  # the event's JSON; for a poison entry, the raw fields as JSON
    poison: bool = False
    at_ms: int = field(default_factory=now_ms)

    def to_fields(self) -> dict[str, str]:
        return {k: str(int(v) if isinstance(v, bool) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> DeadLetter:
        return cls(
            channel=fields["channel"],
            entry_id=fields.get("entry_id", ""),
            reason=fields.get("reason", ""),
            attempts=int(fields.get("attempts", 0)),
            event_id=fields.get("event_id", ""),
            recipient=fields.get("recipient", ""),
            event=fields.get("event", ""),
            poison=fields.get("poison", "0") == "1",
            at_ms=int(fields.get("at_ms", 0)),
        )
