"""Replay from offsets and dead-letter redrive: one channel only, same event ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bookgen_events import Consumer, EventBus
from bookgen_events.endpoints import EndpointRegistry
from bookgen_events.errors import OffsetError
from bookgen_events.replay import group_start, parse_offset, position_group, replay
from bookgen_events.subscribers import SubscriberRegistry

from ..support.channels import RecordingChannel
from ..support.events import progress
from ..support.outcomes import outcomes
from ..support.processes import cli


async def run_burst(bus: EventBus, channel: RecordingChannel) -> None:
    """Run ``channel``'s consumer until nothing is left; its group reads from the stream's
    start (a new group would start at its end)."""
    await bus.ensure_group(channel.name, start="0")
    runtime = Consumer(bus, channel, retry_schedule=(0.01,), max_retries=0, rate_limits=(0, 0))
    await runtime.run(burst=True)


async def test_replay_redelivers_the_range_to_one_channel_with_the_same_ids(bus: EventBus) -> None:
    """Events in [from, to] are delivered again to that channel only, keeping their ids."""
    ids = await bus.emit_many([progress(str(i)) for i in range(10)])
    webhook, email = RecordingChannel("webhook"), RecordingChannel("email")
    await bus.emit({"type": "completion", "job_id": "m", "data": {}, "emails": ["u@example.com"]})
    await run_burst(bus, webhook)
    await run_burst(bus, email)
    first_round, email_round = list(webhook.delivered), list(email.delivered)
    result = await replay(bus, "webhook", ids[3], ids[6])
    assert (result.matched, result.scheduled) == (4, 4)
    assert await bus.redis.zcard(bus.names.scheduled("email")) == 0
    await run_burst(bus, webhook)
    replayed = webhook.delivered[len(first_round) :]
    assert replayed == first_round[3:7]  # same event ids, same order of the stream
    await run_burst(bus, email)  # the other channel sends nothing again
    assert email.delivered == email_round


async def test_replay_filters_by_job_and_type_and_dry_run_writes_nothing(bus: EventBus) -> None:
    """--job-id and --type narrow the range; --dry-run only lists."""
    await bus.emit_many([progress("a"), progress("b"), progress("a")])
    await bus.emit(
        {"type": "completion", "job_id": "a", "data": {}, "webhook_url": "https://x.example.com/"}
    )
    dry = await replay(bus, "webhook", "0", job_id="a", type_="progress_update", dry_run=True)
    assert (dry.matched, dry.scheduled) == (2, 0)
    assert await bus.redis.zcard(bus.names.scheduled("webhook")) == 0


async def test_replay_by_iso_time(bus: EventBus) -> None:
    """Offsets may be ISO times; both ends inclusive."""
    ids = await bus.emit_many([progress(str(i)) for i in range(3)])
    start = datetime.fromtimestamp(int(ids[0].split("-")[0]) / 1000, UTC).isoformat()
    result = await replay(bus, "webhook", start, dry_run=True)
    assert result.matched == 3


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("yesterday", None, "neither a stream id"),
        ("99999999999999-0", None, "after the newest event"),
        ("0", "1-0", "before the oldest retained event"),
    ],
)
async def test_bad_offsets_are_refused_clearly(
    bus: EventBus, start: str, end: str | None, message: str
) -> None:
    """Malformed or out-of-range offsets are refused with a message saying why."""
    await bus.emit(progress("x"))
    with pytest.raises(OffsetError, match=message):
        await replay(bus, "webhook", start, end or "+")


def test_parse_offset_forms() -> None:
    """Stream ids pass through; ISO times become the first/last id of that millisecond."""
    assert parse_offset("1700000000000-5") == "1700000000000-5"
    assert parse_offset("2024-01-01T00:00:00Z") == "1704067200000-0"
    assert parse_offset("2024-01-01T00:00:00Z", end=True).startswith("1704067200000-")


async def test_redrive_after_the_cause_is_fixed(bus: EventBus) -> None:
    """Dead letters go back through the channel once it works again, and leave the DLQ."""
    channel = RecordingChannel("webhook")
    channel.reject.update({"1", "2"})
    await bus.emit_many([progress("1"), progress("2"), progress("3")])
    await bus.redis.xadd(bus.names.events, {"junk": "x"})  # a poison letter too
    await run_burst(bus, channel)
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 3
    channel.reject.clear()  # the receiver is fixed
    count, poison = await bus.dead_letters.redrive("webhook")
    assert count == 2 and len(poison) == 1
    await run_burst(bus, channel)
    assert sorted(e for e, _ in channel.delivered) == sorted(
        o.event_id for o in await outcomes(bus) if o.status == "delivered"
    )
    assert len(channel.delivered) == 3
    assert await bus.redis.xlen(bus.names.dlq("webhook")) == 1  # only the poison entry is left


async def test_cli_replay_dlq_and_refusals(cli_env: dict[str, str], bus: EventBus) -> None:
    """The replay and dlq commands work as a user types them, and refuse bad input clearly."""
    ids = await bus.emit_many([progress("1"), progress("2")])
    result = cli(cli_env, "replay", "webhook", "--from", ids[0], "--dry-run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["matched"] == 2
    bad = cli(cli_env, "replay", "webhook", "--from", "last tuesday")
    assert bad.returncode == 2 and "neither a stream id" in bad.stderr
    await bus.redis.xadd(
        bus.names.dlq("webhook"),
        {"channel": "webhook", "entry_id": ids[0], "reason": "HTTP 500", "attempts": "4", "event_id": "e1",
         "recipient": "https://x.example.com/", "event": "{}", "poison": "0", "at_ms": "1"},
    )  # fmt: skip
    listing = cli(cli_env, "dlq", "webhook", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)[0]["reason"] == "HTTP 500"
    refused = cli(cli_env, "dlq", "webhook", "--purge")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = cli(cli_env, "dlq", "webhook", "--purge", "--yes")
    assert json.loads(purged.stdout) == {"purged": 1}


async def test_replay_counts_and_schedules_only_events_with_a_target(bus: EventBus) -> None:
    """An event without a webhook_url is no webhook redelivery, one without emails no email
    one: neither is counted nor scheduled, and the result says how many were skipped."""
    await bus.emit_many(
        [
            progress("1"),  # a webhook_url
            {**progress("2"), "webhook_url": None},
            {**progress("3"), "webhook_url": None, "emails": ["u@example.com"]},
        ]
    )
    dry = await replay(bus, "webhook", "0", dry_run=True)
    assert (dry.matched, dry.no_recipient, dry.scanned) == (1, 2, 3)
    hooks = await replay(bus, "webhook", "0")
    assert hooks.scheduled == 1 == await bus.redis.zcard(bus.names.scheduled("webhook"))
    mails = await replay(bus, "email", "0")
    assert (mails.matched, mails.scheduled, mails.no_recipient) == (1, 1, 2)


async def test_replay_counts_events_routed_to_endpoints_and_subscribers(bus: EventBus) -> None:
    """Routing lives in the system: an event with no webhook_url that an endpoint wants is a
    webhook redelivery, one with no emails whose user subscribes by email an email one."""
    endpoints = EndpointRegistry.for_prefix(bus.redis, bus.names.prefix)
    await endpoints.create({"url": "https://hooks.example.com/jobs", "job_ids": ["2"]})
    await SubscriberRegistry.for_prefix(bus.redis, bus.names.prefix).put(
        "ada", {"email": "ada@example.com"}
    )
    await bus.emit_many(
        [
            {**progress("1"), "webhook_url": None},  # nobody wants it
            {**progress("2"), "webhook_url": None},  # the endpoint's job
            {**progress("3"), "webhook_url": None, "user_id": "ada"},  # her subscription
        ]
    )
    hooks = await replay(bus, "webhook", "0", dry_run=True)
    assert (hooks.matched, hooks.no_recipient) == (1, 2)
    mails = await replay(bus, "email", "0")
    assert (mails.matched, mails.scheduled, mails.no_recipient) == (1, 1, 2)


async def test_cli_replay_dry_run_says_what_it_skipped(
    cli_env: dict[str, str], bus: EventBus
) -> None:
    """The CLI's dry run reports only redeliverable events and names the skipped ones."""
    await bus.emit_many([progress("1"), {**progress("2"), "webhook_url": None}])
    result = cli(cli_env, "replay", "webhook", "--from", "0", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["matched"] == 1
    assert "1 of 2 events would redeliver" in result.stderr
    assert "1 matching events without a recipient skipped" in result.stderr


def test_group_start_forms() -> None:
    """``consume --from``: 0 is everything, $ only new events, ids and times inclusive."""
    assert group_start("0") == "0-0"
    assert group_start("$") == "$"
    assert group_start("1700000000000-5") == "1700000000000-4"
    assert group_start("1700000000000-0") == "1699999999999-18446744073709551615"
    assert group_start("2024-01-01T00:00:00Z") == "1704067199999-18446744073709551615"
    with pytest.raises(OffsetError):
        group_start("soon")


async def test_position_group_creates_or_moves_and_the_group_reads_from_there(
    bus: EventBus,
) -> None:
    """A new group is created at the position, an existing one moved there (back or forward);
    either way its next read starts at the given entry."""
    ids = await bus.emit_many([progress(str(i)) for i in range(4)])
    (made,) = await position_group(bus, "backfill", ids[2])
    assert made.created and made.previous is None
    read = await bus.read_group("backfill", "c", count=10, block_ms=None)
    assert [entry_id for entry_id, _ in read] == ids[2:]
    (moved,) = await position_group(bus, "backfill", "0")
    assert not moved.created and moved.previous == ids[3] and moved.position == "0-0"
    assert "moved group backfill" in moved.describe()
    read = await bus.read_group("backfill", "c", count=10, block_ms=None)
    assert [entry_id for entry_id, _ in read] == ids
    (ahead,) = await position_group(bus, "backfill", "$")
    assert ahead.position == ids[3]
    assert await bus.read_group("backfill", "c", count=10, block_ms=None) == []
