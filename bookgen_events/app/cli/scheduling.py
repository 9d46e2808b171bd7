"""``scheduled`` and ``cancel``: the events held for their ``deliver_at`` (SPEC 11)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from ...scheduled_events import Cancelled, cancel_in, count_in, list_in
from ...settings import Settings
from ..runner import open_bus
from .base import Add, print_json


def cmd_scheduled(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> tuple[int, list[dict[str, Any]]]:
        async with open_bus(settings) as bus:
            parts = [part.scheduled_events for part in bus.partitions]
            return await count_in(parts), [e.shown() for e in await list_in(parts, args.limit)]

    total, shown = asyncio.run(go())
    if args.json:
        print_json({"count": total, "events": shown})
        return 0
    print(f"{total} scheduled event(s) waiting" + (f", the first {len(shown)}:" if shown else ""))
    for row in shown:
        due = datetime.fromtimestamp(row["due_ms"] / 1000, UTC).isoformat().replace("+00:00", "Z")
        print(f"  {due}  {row['event_id']}  {row['type']}  job={row['job_id'] or '-'}")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Cancelled:
        async with open_bus(settings) as bus:
            parts = [part.scheduled_events for part in bus.partitions]
            return await cancel_in(parts, args.event_id)

    found = asyncio.run(go())
    if found is Cancelled.CANCELLED:
        print_json({"event_id": args.event_id, "cancelled": True})
        return 0
    reason = "was already sent" if found is Cancelled.ALREADY_SENT else "is not scheduled"
    print(f"bookgen-events cancel: event {args.event_id} {reason}", file=sys.stderr)
    return 1


def register(add: Add) -> None:
    """Add this module's commands to the parser."""
    p = add("scheduled", cmd_scheduled, "List the events waiting for their deliver_at.")
    p.add_argument("--limit", type=int, default=100, help="show at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("cancel", cmd_cancel, "Cancel a scheduled event not yet sent (exit 1 if none).")
    p.add_argument("event_id")
