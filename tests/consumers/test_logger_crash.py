"""A real ``bookgen-events consume logger`` process, SIGKILLed mid-run and restarted."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from bookgen_events import EventBus, Settings
from bookgen_events.bus import Commit
from bookgen_events.db import Notification, get_engine
from bookgen_events.events import decode
from bookgen_events.outcomes import Outcome
from consumers.logger import GROUP, rebuild
from tests.support.database import rows, snapshot
from tests.support.events import progress
from tests.support.processes import spawn
from tests.support.waits import eventually

EVENTS = 10_000


def count(url: str) -> int:
    try:
        with get_engine(url).connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Notification)).scalar_one())
    except OperationalError:  # no table yet
        return 0


async def settled(bus: EventBus) -> bool:
    for stream in (bus.names.events, bus.names.deliveries):
        (group,) = [g for g in await bus.groups_info(stream) if g["name"] == GROUP]
        if group["pending"] or group["lag"]:
            return False
    return True


async def test_killed_mid_batch_then_restarted_table_exact(
    bus: EventBus, log_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL while writing; a new process reclaims the entries and the table is exact."""
    url = log_settings.database_url
    env = {**cli_env, "DATABASE_URL": url, "EMAIL_ENABLED": "true"}
    for i in range(0, EVENTS, 2000):
        batch = [progress(str(j), f"https://hooks.example.com/{j % 7}") for j in range(i, i + 2000)]
        await bus.emit_many(batch)
    first_50 = [(eid, decode(f)) for eid, f in await bus.range(count=50)]
    outcomes = [
        Outcome(event.id, eid, "webhook", event.webhook_url or "", "delivered", 1, True)
        for eid, event in first_50
    ]
    await bus.commit("test", Commit([o.record() for o in outcomes], [], [], [], []), "test")

    first = spawn(["consume", "logger"], env, tmp_path / "logger-1.log")
    try:
        await eventually(lambda: asyncio.to_thread(lambda: count(url) > 0), 30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    written = await asyncio.to_thread(count, url)
    assert 0 < written < 2 * EVENTS, "the kill must land before the run finished"
    # What the dead process had read but not acked (the kill may also land between batches).
    orphaned = 0
    for stream in (bus.names.events, bus.names.deliveries):
        groups = await bus.groups_info(stream)
        orphaned += sum(int(g["pending"]) for g in groups if g["name"] == GROUP)

    second = spawn(["consume", "logger"], env, tmp_path / "logger-2.log")
    try:
        await eventually(lambda: settled(bus), 30)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    if orphaned:
        assert "reclaimed idle entries" in (tmp_path / "logger-2.log").read_text()

    # Exact: the same table a rebuild from the streams gives in an empty database.
    reference = log_settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'reference.db'}"}
    )
    await rebuild(bus, reference)
    assert await asyncio.to_thread(count, url) == 2 * EVENTS
    assert len(rows(url, delivery_method="webhook", status="delivered")) == len(outcomes)
    assert snapshot(url) == snapshot(reference.database_url)
    assert await bus.range(stream=bus.names.dlq(GROUP)) == []
