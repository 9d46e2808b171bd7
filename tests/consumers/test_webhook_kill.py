"""SIGKILL of a real ``bookgen-events consume webhook`` process mid-flight loses no event."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from bookgen_events.bus import EventBus
from bookgen_events.events import Event
from tests.support.processes import spawn
from tests.support.waits import eventually
from tests.support.webhooks import SECRET, Receiver, Reply


async def test_sigkill_mid_flight_then_restart_delivers_every_event(
    bus: EventBus, cli_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    """Kill -9 while deliveries are in flight; a second process delivers the rest (at least once)."""
    env = {
        **cli_env,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_RETRY_SCHEDULE": "100ms,200ms,300ms",
        "WEBHOOK_TIMEOUT": "5",
        "WEBHOOK_RATE_LIMIT_PER_MINUTE": "0",
        "WEBHOOK_RATE_LIMIT_PER_HOUR": "0",
        "CONSUMER_CONCURRENCY": "16",
    }
    receiver.script("k", [], then=Reply(delay=0.05))  # slow enough to be caught mid-flight
    events = [
        Event(
            type="progress_update",
            job_id=str(i),
            data={"progress": 1},
            webhook_url=receiver.url("k"),
        )
        for i in range(200)
    ]
    await bus.emit_many(events)
    log = tmp_path / "consumers.log"

    first = spawn(["consume", "webhook"], env, log)
    try:
        await eventually(lambda: len(receiver.at("k")) >= 30, 20, "the first consumer to deliver")
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    seen_before_kill = len({r.webhook_id for r in receiver.at("k")})
    assert seen_before_kill < len(events), "killed too late to prove anything"

    second = spawn(["consume", "webhook"], env, log)
    try:
        expected = {e.id for e in events}
        await eventually(
            lambda: {r.webhook_id for r in receiver.at("k")} >= expected, 30, "every event id"
        )
        second.send_signal(signal.SIGTERM)
        # Poll, not wait(): the receiver runs on this loop and must keep answering meanwhile.
        await eventually(lambda: second.poll() is not None, 15, "a graceful exit on SIGTERM")
        assert second.returncode == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    counts = Counter(r.webhook_id for r in receiver.at("k"))
    duplicates = sum(n - 1 for n in counts.values())
    print(f"delivered {len(counts)} ids with {duplicates} duplicate deliveries after SIGKILL")
    assert counts.keys() == expected
    # At most what the killed process had in flight or delivered but not yet recorded.
    assert duplicates <= 2 * 16
    verifier = Webhook(SecretStr(SECRET).get_secret_value())
    for request in receiver.at("k")[:5]:
        verifier.verify(request.body, request.headers)
