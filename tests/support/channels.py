"""A test double of the *channel* seam (never of the runtime, Redis or a transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bookgen_events import Event, Reject, RetryLater


class RecordingChannel:
    """A channel that records deliveries in memory and can fail on demand.

    ``fail[job_id]`` = how many attempts to fail with RetryLater before succeeding;
    job ids in ``reject`` fail permanently; ``delay[job_id]`` sleeps before delivering.
    """

    def __init__(self, name: str = "webhook") -> None:
        self.name = name
        self.delivered: list[tuple[str, str]] = []  # (event id, recipient)
        self.attempts: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.reject: set[str] = set()
        self.delay: dict[str, float] = {}

    def recipients(self, event: Event) -> Sequence[str]:
        return [event.webhook_url] if event.webhook_url else list(event.emails)

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return recipient

    async def deliver(self, event: Event, recipient: str) -> int | None:
        job = event.job_id or ""
        self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if job in self.delay:
            await asyncio.sleep(self.delay[job])
        if job in self.reject:
            raise Reject("permanently refused", status_code=410)
        if self.fail.get(job, 0) > 0:
            self.fail[job] -= 1
            raise RetryLater("temporarily down", status_code=503)
        self.delivered.append((event.id, recipient))
        return 200
