"""SIGKILL of a real ``bookgen-events consume sms`` process mid-flight: every text accounted for."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from bookgen_events.bus import EventBus
from bookgen_events.events import Event
from bookgen_events.subscribers import SubscriberRegistry
from tests.support.outcomes import outcomes
from tests.support.processes import spawn
from tests.support.twilio import FROM, SID, TOKEN, TwilioReceiver
from tests.support.waits import eventually


async def test_sigkill_mid_flight_then_restart_accounts_for_every_text(
    bus: EventBus, cli_env: dict[str, str], twilio: TwilioReceiver, tmp_path: Path, prefix: str
) -> None:
    """Kill -9 while texts are in flight; a second process sends the rest: every (event,
    phone) ends delivered or suppressed exactly once in the outcomes, each phone texted at
    least once, duplicates bounded by what was in flight."""
    env = {
        **cli_env,
        "SMS_ENABLED": "true",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": FROM,
        "TWILIO_API_BASE": twilio.base_url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_RETRY_SCHEDULE": "100ms,200ms,300ms",
        "WEBHOOK_TIMEOUT": "5",
        "SMS_RATE_LIMIT_PER_MINUTE": "0",
        "SMS_RATE_LIMIT_PER_HOUR": "0",
        "CONSUMER_CONCURRENCY": "16",
    }
    registry = SubscriberRegistry.for_prefix(bus.redis, prefix)
    await registry.put(
        "quiet", {"phone": "+33699999999", "preferences": {"sms": {"enabled": False}}}
    )
    twilio.delay = 0.05  # slow enough to be caught mid-flight
    events = [
        Event(
            type="completion",
            job_id=str(i),
            data={},
            # Every tenth also names the opted-out subscriber's phone: suppressed, not sent.
            phones=[f"+1555{i:07d}"] + (["+33699999999"] if i % 10 == 0 else []),
        )
        for i in range(200)
    ]
    owed = {(e.id, p) for e in events for p in e.phones}
    await bus.ensure_group("sms")
    await bus.emit_many(events)
    log = tmp_path / "consumers.log"

    first = spawn(["consume", "sms"], env, log)
    try:
        await eventually(lambda: len(twilio.messages) >= 30, 20, "the first consumer to text")
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert len({m.to for m in twilio.messages}) < len(events), "killed too late to prove anything"

    async def final() -> dict[tuple[str, str], list[str]]:
        settled: dict[tuple[str, str], list[str]] = {}
        for o in await outcomes(bus):
            if o.channel == "sms" and o.final:
                settled.setdefault((o.event_id, o.recipient), []).append(o.status)
        return settled if settled.keys() >= owed else {}

    second = spawn(["consume", "sms"], env, log)
    try:
        settled = await eventually(final, 30, "every (event, phone) settled")
        second.send_signal(signal.SIGTERM)
        # Poll, not wait(): the receiver runs on this loop and must keep answering meanwhile.
        await eventually(lambda: second.poll() is not None, 15, "a graceful exit on SIGTERM")
        assert second.returncode == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    assert settled.keys() == owed
    assert twilio.to("+33699999999") == [] and twilio.unauthorized == 0
    suppressed = {k for k, v in settled.items() if v == ["suppressed"]}
    assert {p for _, p in suppressed} == {"+33699999999"} and len(suppressed) == 20
    # Exactly once each: a text sent but not recorded before the kill is sent again, and
    # only the second is recorded (outcomes and acks are written together).
    assert all(v == ["delivered"] for k, v in settled.items() if k not in suppressed)
    texted = Counter(m.to for m in twilio.messages)
    assert set(texted) == {p for _, p in owed} - {"+33699999999"}
    duplicates = sum(n - 1 for n in texted.values())
    print(f"texted {len(texted)} phones with {duplicates} duplicates after SIGKILL")
    assert duplicates <= 2 * 16
    assert all(m.body.startswith("BookGen: Your biography is ready") for m in twilio.messages)
