"""Endpoint changes reach every dispatcher replica without a restart, and survive restarts:
two real ``bookgen-events consume webhook`` processes, changes made by the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

from bookgen_events.bus import EventBus
from bookgen_events.events import Event
from tests.support.outcomes import final_outcomes
from tests.support.processes import cli, spawn
from tests.support.waits import eventually
from tests.support.webhooks import SECRET, Receiver, Reply

#: SPEC 9: a change reaches every replica within this long.
PROPAGATION_S = 2.0


def events(receiver: Receiver, count: int, start: int) -> list[Event]:
    return [
        Event(type="progress_update", job_id=str(i), data={"progress": 1},
              webhook_url=receiver.url("own"))
        for i in range(start, start + count)
    ]  # fmt: skip


async def consumers(bus: EventBus) -> int:
    return len(await bus.redis.xinfo_consumers(bus.names.events, "webhook"))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


async def test_a_change_reaches_both_replicas_and_survives_a_restart(
    bus: EventBus, cli_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    """Each replica holds at most two entries at a time and the receiver is slow, so both
    take a share: every event reaching the new endpoint proves both routed to it. Then one
    replica is SIGKILLed, the endpoint disabled while it is down, and the restarted replica
    routes nothing more to it."""
    env = {
        **cli_env,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_RATE_LIMIT_PER_MINUTE": "0",
        "WEBHOOK_RATE_LIMIT_PER_HOUR": "0",
        "CONSUMER_CONCURRENCY": "1",
        "CONSUMER_BATCH": "1",
    }
    for path in ("own", "ep"):
        receiver.script(path, [], then=Reply(delay=0.1))
    log = tmp_path / "replicas.log"
    replicas = [spawn(["consume", "webhook"], env, log) for _ in range(2)]
    try:
        await eventually(lambda: _count_is(bus, 2), 20, "both replicas to read")

        added = await asyncio.to_thread(cli, env, "endpoints", "add", receiver.url("ep"))
        assert added.returncode == 0, added.stderr
        endpoint_id = json.loads(added.stdout)["id"]
        await asyncio.sleep(PROPAGATION_S)
        first = events(receiver, 10, 0)
        await bus.emit_many(first)
        await final_outcomes(bus, 20, within=30)
        assert {r.webhook_id for r in receiver.at("ep")} == {e.id for e in first}

        os.kill(replicas[0].pid, signal.SIGKILL)
        stop(replicas[0])
        disabled = await asyncio.to_thread(cli, env, "endpoints", "disable", endpoint_id)
        assert disabled.returncode == 0, disabled.stderr
        replicas[0] = spawn(["consume", "webhook"], env, log)
        await eventually(lambda: _count_is(bus, 3), 20, "the restarted replica to read")
        await asyncio.sleep(PROPAGATION_S)
        second = events(receiver, 10, 10)
        await bus.emit_many(second)
        settled = await final_outcomes(bus, 30, within=30)
    finally:
        for process in replicas:
            stop(process)
    later = [o for o in settled if o.event_id in {e.id for e in second}]
    assert sorted(o.recipient for o in later) == [receiver.url("own")] * 10
    assert all(o.status == "delivered" for o in later)
    assert len(receiver.at("ep")) == 10  # nothing after it was disabled


async def _count_is(bus: EventBus, n: int) -> bool:
    try:
        return await consumers(bus) == n
    except Exception:  # the group does not exist yet
        return False
