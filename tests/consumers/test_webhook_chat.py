"""Slack and Discord endpoints (SPEC 10) and per-endpoint rate limits (SPEC 9), through the
real dispatcher to local receivers shaped like those services, recording what arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from standardwebhooks.webhooks import Webhook

from bookgen_events import EventBus, Settings
from bookgen_events.endpoints import EndpointRegistry, InvalidEndpoint
from consumers.webhook import serve
from tests.support.chat import ChatReceiver, discord_receiver, slack_receiver  # noqa: F401
from tests.support.outcomes import dead_letters, final_outcomes, outcomes
from tests.support.webhooks import Receiver


def completion(job_id: str) -> dict:
    return {
        "type": "completion",
        "job_id": job_id,
        "data": {"biography_id": 7, "character_name": "Ada Lovelace", "status": "completed"},
    }


@pytest.fixture
def registry(bus: EventBus) -> EndpointRegistry:
    return EndpointRegistry.for_prefix(bus.redis, bus.names.prefix)


Start = Callable[..., Awaitable[None]]


@pytest.fixture
async def start_dispatcher(bus: EventBus, webhook_settings: Settings) -> AsyncIterator[Start]:
    """``consume webhook`` as in production; each call starts one more replica."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start(**changes: object) -> None:
        settings = webhook_settings.model_copy(
            update={"consumer_name": f"replica-{len(tasks)}", **changes}
        )
        tasks.append(asyncio.create_task(serve(bus, settings, stop)))

    try:
        yield start
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_slack_and_discord_get_their_own_shapes_and_webhooks_stay_signed(
    bus: EventBus,
    registry: EndpointRegistry,
    receiver: Receiver,
    slack_receiver: ChatReceiver,  # noqa: F811
    discord_receiver: ChatReceiver,  # noqa: F811
    start_dispatcher: Start,
) -> None:
    """One event: Slack gets text + blocks, Discord content + embeds, neither signed but both
    with the endpoint's headers; an ordinary endpoint still verifies with Standard Webhooks."""
    await registry.create(
        {"url": slack_receiver.url(), "type": "slack", "headers": {"X-Team": "books"}}
    )
    await registry.create({"url": discord_receiver.url(), "type": "discord"})
    plain = await registry.create({"url": receiver.url("plain")})
    await start_dispatcher()

    await bus.emit(completion("42"))
    finals = await final_outcomes(bus, 3)
    assert {o.status for o in finals} == {"delivered"}

    (slack,) = slack_receiver.arrivals
    assert slack.json["text"] == "✅ Biography of Ada Lovelace is ready"
    assert [b["type"] for b in slack.json["blocks"]] == ["header", "section", "section", "context"]
    assert slack.headers["X-Team"] == "books"
    assert slack.headers["Content-Type"] == "application/json"
    assert not any(h.lower().startswith("webhook-") for h in slack.headers)

    (discord,) = discord_receiver.arrivals
    embed = discord.json["embeds"][0]
    assert discord.json["content"] == "✅ Biography of Ada Lovelace is ready"
    assert (
        embed["color"] == 0x2ECC71
        and {"name": "Job", "value": "42", "inline": True} in (embed["fields"])
    )
    assert discord.json["allowed_mentions"] == {"parse": []}
    assert not any(h.lower().startswith("webhook-") for h in discord.headers)

    (signed,) = receiver.at("plain")
    body = Webhook(plain.secret).verify(signed.body, signed.headers)
    assert body["event"] == "job.completed" and body["job_id"] == "42"


async def test_discord_retry_after_in_the_body_is_honoured(
    bus: EventBus,
    registry: EndpointRegistry,
    discord_receiver: ChatReceiver,  # noqa: F811
    start_dispatcher: Start,
) -> None:
    """A 429 with {"retry_after": 0.3} and no header: the retry waits at least 0.3 s (the
    schedule alone would retry after 0.01 s), then is delivered."""
    discord_receiver.rate_limit_once(0.3)
    await registry.create({"url": discord_receiver.url(), "type": "discord"})
    await start_dispatcher(webhook_retry_schedule=(0.01,))

    await bus.emit(completion("1"))
    (final,) = await final_outcomes(bus, 1)
    assert (final.status, final.attempt) == ("delivered", 2)
    first, second = discord_receiver.arrivals
    assert second.at - first.at >= 0.3
    assert first.body == second.body
    failed = [o for o in await outcomes(bus) if o.status == "failed"]
    assert failed[0].status_code == 429 and "0.3s" in (failed[0].error or "")


async def test_an_endpoints_rate_limit_is_shared_by_replicas(
    bus: EventBus, registry: EndpointRegistry, receiver: Receiver, start_dispatcher: Start
) -> None:
    """rate_limit_per_minute=2, two dispatcher replicas, six events: exactly two delivered,
    four rate_limited (logged as such), though the channel itself has no limit."""
    await registry.create({"url": receiver.url("slow"), "rate_limit_per_minute": 2})
    await start_dispatcher()
    await start_dispatcher()
    for i in range(6):
        await bus.emit(completion(f"j{i}"))
    finals = await final_outcomes(bus, 6)
    statuses = sorted(o.status for o in finals)
    assert statuses == ["delivered"] * 2 + ["rate_limited"] * 4
    assert all(o.error == "rate limit exceeded" for o in finals if o.status == "rate_limited")
    assert len(receiver.at("slow")) == 2


async def test_discord_defaults_to_five_per_two_seconds(
    bus: EventBus,
    registry: EndpointRegistry,
    discord_receiver: ChatReceiver,  # noqa: F811
    start_dispatcher: Start,
) -> None:
    """Without a limit of its own a Discord endpoint takes 5 of a burst of 7."""
    await registry.create({"url": discord_receiver.url(), "type": "discord"})
    events = [completion(f"b{i}") for i in range(7)]
    for event in events:
        await bus.emit(event)
    await start_dispatcher()
    finals = await final_outcomes(bus, 7)
    assert sorted(o.status for o in finals) == ["delivered"] * 5 + ["rate_limited"] * 2
    assert len(discord_receiver.arrivals) == 5


async def test_ssrf_rules_hold_for_chat_endpoints(
    bus: EventBus,
    registry: EndpointRegistry,
    start_dispatcher: Start,
    slack_receiver: ChatReceiver,  # noqa: F811
    discord_receiver: ChatReceiver,  # noqa: F811
) -> None:
    """A loopback Slack/Discord URL is dead-lettered unless WEBHOOK_ALLOW_PRIVATE, never sent;
    decimal and hex hosts are refused at registration whatever that setting says."""
    for kind, target in (("slack", slack_receiver), ("discord", discord_receiver)):
        port = target.base_url.rsplit(":", 1)[1]
        for host in ("2130706433", "0x7f.1"):
            with pytest.raises(InvalidEndpoint, match="url"):
                await registry.create({"url": f"http://{host}:{port}/x", "type": kind})
        await registry.create({"url": target.url(), "type": kind})
    await start_dispatcher(webhook_allow_private=False)

    await bus.emit(completion("ssrf"))
    finals = await final_outcomes(bus, 2)
    assert {(o.status, o.attempt) for o in finals} == {("failed", 1)}
    letters = await dead_letters(bus)
    assert len(letters) == 2
    assert all("SSRF guard" in d.reason and "loopback" in d.reason for d in letters)
    assert slack_receiver.arrivals == discord_receiver.arrivals == []
