"""``bookgen-events demo``: a simulated biography job, so a newcomer sees every channel work.

It emits what a real job would (status change, progress 0→100, completion or a critical
error) through ``NotificationService``, then waits for the consumers' outcomes and tallies
them per channel.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from gateway.auth import mint_token

from ..bus import EventBus
from ..outcomes import Outcome
from ..service import NotificationService
from ..settings import Settings

CHARACTERS = ("Marie Curie", "Albert Einstein", "Ada Lovelace", "Nelson Mandela")


async def run_demo(
    bus: EventBus,
    settings: Settings,
    *,
    job_id: str,
    steps: int = 10,
    interval: float = 0.3,
    fail: bool = False,
    webhook_url: str | None = None,
    email: str | None = None,
    user_id: str | None = None,
    wait_s: float = 10.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Emit one job's life cycle and return the outcomes seen per channel and status."""
    service = NotificationService(bus, settings=settings)
    start = (await bus.revrange(count=1, stream=bus.names.deliveries) or [("0-0", {})])[0][0]
    ids: list[str] = []

    def track(stream_id: str, what: str) -> None:
        ids.append(stream_id)
        say(f"  emitted {what:<40} stream id {stream_id}")

    # The gateway's address is not known here (it runs elsewhere): its default is assumed.
    link = {"job_id": job_id}
    secret = settings.websocket_jwt_secret
    if settings.websocket_auth == "jwt" and secret is not None:
        link["token"] = mint_token(
            secret.get_secret_value(), user_id=None, job_ids=[job_id], ttl_s=3600
        )
    say(f"job {job_id}: watch it live at http://127.0.0.1:8000/?{urlencode(link)}")
    if settings.websocket_auth == "jwt" and secret is None:
        say(f"  (the page needs a token: bookgen-events token --job-id {job_id})")
    track(
        await service.send_status_change(
            job_id, "queued", "running", webhook_url, email, user_id=user_id
        ),
        "status_change queued -> running",
    )
    for step in range(steps + 1):
        progress = round(100 * step / steps, 1)
        if fail and progress >= 60:
            track(
                await service.send_error_alert(
                    job_id,
                    "Simulated generation failure",
                    "critical",
                    webhook_url,
                    user_email=email,
                    user_id=user_id,
                ),
                "error_alert (critical)",
            )
            break
        track(
            await service.send_progress_update(
                job_id,
                progress,
                f"Chapter {step} of {steps}",
                "Generating content...",
                user_id=user_id,
                webhook_url=webhook_url,
            ),
            f"progress_update {progress:5.1f}%",
        )
        await asyncio.sleep(interval)
    else:
        track(
            await service.send_completion_notification(
                job_id,
                random.randint(1, 9999),
                random.choice(CHARACTERS),
                "completed",
                webhook_url,
                email,
                user_id=user_id,
            ),
            "completion",
        )
    channels = {"webhook"} if webhook_url else set()
    if email and settings.email_enabled:
        channels.add("email")
    outcomes = await _wait_for_outcomes(bus, start, ids, channels, wait_s) if channels else []
    tally = Counter(f"{o.channel}:{o.status}" for o in outcomes if o.final)
    say(f"emitted {len(ids)} events; final outcomes so far: {dict(tally) or 'none yet'}")
    if not channels:
        say("  (WebSocket and the log only: add --webhook-url or --email to see delivery outcomes)")
    elif not outcomes:
        say("  (no consumer answered: is `bookgen-events up` running against this Redis?)")
    return {"job_id": job_id, "emitted": len(ids), "outcomes": dict(tally)}


async def _wait_for_outcomes(
    bus: EventBus, after: str, ids: list[str], channels: set[str], wait_s: float
) -> list[Outcome]:
    """Collect outcomes of the emitted entries until each targeted channel has settled them
    all, or ``wait_s`` passes."""
    deadline = time.monotonic() + wait_s
    wanted = set(ids)
    seen: list[Outcome] = []
    settled: dict[str, set[str]] = {channel: set() for channel in channels}
    last = after
    while time.monotonic() < deadline:
        for entry_id, fields in await bus.read(last, count=1000, stream=bus.names.deliveries):
            last = entry_id
            try:
                outcome = Outcome.from_fields(fields)
            except (KeyError, ValueError):
                continue
            if outcome.entry_id in wanted:
                seen.append(outcome)
                if outcome.final:
                    settled.setdefault(outcome.channel, set()).add(outcome.entry_id)
        if all(settled[c] >= wanted for c in channels):
            break
        await asyncio.sleep(0.1)
    return seen
