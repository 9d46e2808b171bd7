"""Reading what the consumers recorded: delivery outcomes and dead letters, straight from Redis."""

from __future__ import annotations

from bookgen_events.bus import EventBus
from bookgen_events.outcomes import DeadLetter, Outcome

from .waits import eventually


async def outcomes(bus: EventBus) -> list[Outcome]:
    """Every outcome on the deliveries stream, in order."""
    return [Outcome.from_fields(f) for _, f in await bus.redis.xrange(bus.names.deliveries)]


async def dead_letters(bus: EventBus, channel: str = "webhook") -> list[DeadLetter]:
    """Every dead letter of ``channel``, in order."""
    entries = await bus.redis.xrange(bus.names.dlq(channel))
    return [DeadLetter.from_fields(f) for _, f in entries]


async def final_outcomes(bus: EventBus, count: int, within: float = 10.0) -> list[Outcome]:
    """Wait until ``count`` deliveries are settled (delivered, rate limited or dead-lettered)."""

    async def settled() -> bool:
        return len([o for o in await outcomes(bus) if o.final]) >= count

    await eventually(settled, within, f"{count} settled deliveries")
    return [o for o in await outcomes(bus) if o.final]
