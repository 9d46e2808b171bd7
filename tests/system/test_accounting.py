"""The accounting invariant with no fault, with consumers SIGKILLed, and with flaky peers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tests.support.waits import eventually

from .conftest import System
from .harness import CONSUMERS
from .reconcile import reconcile


async def test_every_event_is_accounted_for_on_every_channel(system: System) -> None:
    """With nothing failing, every event reaches every channel once and the table agrees."""
    await system.emit(60)
    report = await system.settle()
    assert report.lost == 0, report.summary()
    assert report.db_mismatches == 0, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.channels["webhook"].delivered == 60
    await system.shut_down_cleanly()


async def _pending(system: System, role: str) -> int:
    streams = [system.bus.names.events]
    if role == "logger":
        streams.append(system.bus.names.deliveries)
    total = 0
    for stream in streams:
        total += (await system.bus.redis.xpending(stream, role))["pending"]
    return total


async def kill_consumers_under_load(
    system: System, *, total: int, kills: int, roles: Sequence[str] = CONSUMERS, gap: float = 0.4
) -> list[tuple[str, int]]:
    """Emit a steady load while SIGKILLing ``roles`` ``kills`` times each, at seeded random
    moments, restarting each at once; returns (role, entries pending at the kill)."""
    system.hooks.delay = 0.02
    system.smtp.handler.delay = 0.02
    load = asyncio.create_task(system.emit_waves(total))
    plan = [role for role in roles for _ in range(kills)]
    system.rng.shuffle(plan)
    killed = []
    try:
        await eventually(lambda: system.events, 5, "the load to start")
        for role in plan:
            await asyncio.sleep(system.rng.uniform(0.05, gap))  # a random point: the chaos itself
            killed.append((role, await _pending(system, role)))
            await system.cluster.kill(role)
            system.cluster.start(role)
    finally:
        await load
    return killed


async def test_sigkilled_consumers_lose_nothing(system: System) -> None:
    """Each consumer SIGKILLed once mid-load and restarted: every event still ends accounted for."""
    killed = await kill_consumers_under_load(system, total=150, kills=1)
    report = await system.settle(within=40)
    print(f"killed (role, pending at kill): {killed}")
    assert report.lost == 0, report.summary()
    assert report.db_mismatches == 0, report.summary()
    assert system.cluster.kills == {"webhook": 1, "email": 1, "logger": 1}
    await system.shut_down_cleanly()


@pytest.mark.slow
async def test_repeatedly_sigkilled_consumers_lose_nothing(system: System) -> None:
    """Every consumer SIGKILLed four times at random points under a longer load: nothing lost."""
    killed = await kill_consumers_under_load(system, total=2000, kills=4, gap=1.5)
    report = await system.settle(within=90)
    print(f"killed (role, pending at kill): {killed}")
    assert report.lost == 0, report.summary()
    assert report.db_mismatches == 0, report.summary()
    assert sum(pending for _, pending in killed) > 0, "no kill landed mid-work"
    await system.shut_down_cleanly()


async def _flapping_receiver(system: System, total: int) -> None:
    system.hooks.flap(down=0.3, up=0.3)
    await system.emit_waves(total, wave=10, every=0.05)
    report = await system.settle(within=40 + total / 50)
    assert report.lost == 0, report.summary()
    assert report.db_mismatches == 0, report.summary()
    assert system.hooks.refused > 0 and report.channels["webhook"].retries > 0
    assert report.channels["email"].retries == 0
    await system.shut_down_cleanly()


async def test_flapping_receiver_is_retried_until_accounted_for(system: System) -> None:
    """A receiver flapping 500/200 costs retries, never events; other channels are unaffected."""
    await _flapping_receiver(system, 100)


@pytest.mark.slow
async def test_flapping_receiver_under_longer_load(system: System) -> None:
    """A thousand events into a receiver flapping 500/200: still nothing lost."""
    await _flapping_receiver(system, 1000)


async def test_smtp_outage_is_ridden_out(system: System) -> None:
    """With the SMTP server gone for a while and back on its port, every email is accounted for."""
    await system.emit(30)
    assert (await system.settle()).lost == 0
    await system.smtp.stop()
    outage = await system.emit(30)

    async def emails_retried() -> bool:
        report = await reconcile(system.bus, outage, system.seen(), database_url=None)
        return report.channels["email"].retries >= 2 * len(outage)

    await eventually(emails_retried, 15, "every outage email to fail twice")
    await system.smtp.start()
    report = await system.settle(within=40)
    assert report.lost == 0, report.summary()
    assert report.db_mismatches == 0, report.summary()
    assert report.channels["email"].dead_lettered == 0, report.summary()
    await system.shut_down_cleanly()
