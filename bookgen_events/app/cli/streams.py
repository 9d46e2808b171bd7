"""``emit``, ``tail`` and ``status``: write to and read the streams."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from ...events import WIRE_FIELD, EventType
from ...ops import status, tail
from ...replay import before, parse_offset
from ...settings import Settings
from ..runner import (
    open_bus,
)
from .base import Add, print_json


def _event_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(whole, dict):
            raise ValueError("--json must be a JSON object")
        return whole
    if not args.type:
        raise ValueError("give an event TYPE or --json")
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--data is not valid JSON: {exc}") from None
    event: dict[str, Any] = {"type": args.type, "data": data, "emails": args.email or []}
    for key in ("job_id", "user_id", "webhook_url", "id"):
        if getattr(args, key):
            event[key] = getattr(args, key)
    return event


def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    event = _event_from_args(args)

    async def go() -> str:
        async with open_bus(settings) as bus:
            return await bus.emit(event)

    print_json({"stream_id": asyncio.run(go())})
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:

    # --from: "$" (now), a stream id to start after, or an ISO time to start at.
    start = args.start.strip()
    if start != "$" and parse_offset(start) != start:
        start = before(parse_offset(start))

    async def go() -> None:
        async with open_bus(settings) as bus:
            many = len(bus.partitions) > 1  # STREAM_PARTITIONS: say which partition
            entries = await tail(
                bus,
                start=start,
                count=args.count or 0,
                follow=args.follow,
                deliveries=args.deliveries,
            )
            async for partition, entry_id, fields in entries:
                _print_entry(entry_id, fields, partition if many else None)

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(go())
    return 0


def _print_entry(entry_id: str, fields: dict[str, str], partition: int | None = None) -> None:
    where: dict[str, Any] = {"stream_id": entry_id}
    if partition is not None:
        where["partition"] = partition
    if WIRE_FIELD in fields:
        try:
            print_json({**where, **json.loads(fields[WIRE_FIELD])})
            return
        except ValueError:
            pass
    print_json({**where, **fields})


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            report = await status(bus, settings)
        report["retention"]["oldest_log_row"] = _oldest_log_row(settings)
        return report

    report = asyncio.run(go())
    if args.json:
        print_json(report)
    else:
        _print_status(report)
    return 0


def _oldest_log_row(settings: Settings) -> str | None:
    """When the oldest notifications row kept was created, or why that is unknown."""
    if not settings.enable_notification_logging:
        return None
    from sqlalchemy.exc import SQLAlchemyError

    from ...db import get_engine, oldest_row_at

    try:
        oldest = oldest_row_at(get_engine(settings.database_url))
    except SQLAlchemyError as exc:
        return f"unknown (database: {type(exc).__name__})"
    return None if oldest is None else oldest.isoformat() + "Z"


def _print_retention(console: Any, kept: dict[str, Any]) -> None:
    def setting(seconds: float | None) -> str:
        return "off" if seconds is None else f"{seconds / 86400:g}d"

    def age(ms: int | None) -> str:
        return "-" if ms is None else f"{ms / 86_400_000:.2f}d"

    streams = ", ".join(f"{name} oldest {age(ms)}" for name, ms in kept["oldest_age_ms"].items())
    console.print(
        f"STREAM_RETENTION {setting(kept['stream_retention_s'])} "
        f"(STREAM_MAXLEN {kept['stream_maxlen']}): {streams}"
    )
    letters = ", ".join(
        f"{c} oldest {age(ms)}" for c, ms in kept["oldest_dead_letter_age_ms"].items()
    )
    console.print(f"DLQ_RETENTION {setting(kept['dlq_retention_s'])}: {letters}")
    console.print(
        f"LOG_RETENTION {setting(kept['log_retention_s'])}: oldest row "
        f"{kept.get('oldest_log_row') or '-'}"
    )


def _print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key in ("events", "deliveries"):
        stream = report[key]
        console.print(
            f"[bold]{stream['name']}[/bold]: {stream['length']} entries, "
            f"first {stream.get('first_id')}, last {stream.get('last_id')}"
        )
        if stream["groups"]:
            table = Table("group", "lag", "pending", "consumers", "oldest pending age")
            for g in stream["groups"]:
                age = g["oldest_pending_age_ms"]
                consumers = ", ".join(
                    f"{c['name']} ({c['pending']} pending, idle {c['idle_ms'] / 1000:.0f}s)"
                    for c in g["consumers"]
                )
                table.add_row(
                    g["group"],
                    str(g["lag"]),
                    str(g["pending"]),
                    consumers or "-",
                    f"{age / 1000:.1f}s" if age is not None else "-",
                )
            console.print(table)
    if "partitions" in report:  # STREAM_PARTITIONS > 1: each partition's groups
        table = Table("partition", "stream", "entries", "group", "lag", "pending")
        for part in report["partitions"]:
            for key in ("events", "deliveries"):
                stream = part[key]
                for g in stream["groups"] or [None]:
                    table.add_row(
                        str(part["partition"]),
                        stream["name"],
                        str(stream["length"]),
                        g["group"] if g else "-",
                        str(g["lag"]) if g else "-",
                        str(g["pending"]) if g else "-",
                    )
        console.print(table)
    table = Table("channel", "dead letters", "scheduled retries")
    for channel, size in report["dead_letters"].items():
        table.add_row(channel, str(size), str(report["scheduled"].get(channel, 0)))
    console.print(table)
    console.print(f"scheduled events waiting for their deliver_at: {report['scheduled_events']}")
    if "retention" in report:
        _print_retention(console, report["retention"])
    redis = report["redis"]
    console.print(f"redis {redis['version']}, memory {redis['used_memory_human']}")


def register(add: Add) -> None:
    """Add this module's commands to the parser."""
    p = add("emit", cmd_emit, "Validate and append one event; prints its stream id.")
    p.add_argument("type", nargs="?", choices=[t.value for t in EventType])
    p.add_argument("--job-id")
    p.add_argument("--user-id")
    p.add_argument("--data", default="{}", help="the type's data as a JSON object")
    p.add_argument("--webhook-url")
    p.add_argument("--email", action="append", help="an email recipient (repeatable)")
    p.add_argument("--id", help="event id (default: a new UUIDv7)")
    p.add_argument("--json", help="the whole event as JSON ('-' reads stdin)")
    p = add("tail", cmd_tail, "Print stream entries as JSON lines, following live.")
    p.add_argument(
        "--from",
        dest="start",
        default="$",
        help="a stream id to start after, or an ISO time to start at (default $: now)",
    )
    p.add_argument("--count", type=int, default=0, help="first print the last N entries")
    p.add_argument("--no-follow", dest="follow", action="store_false")
    p.add_argument("--deliveries", action="store_true", help="tail delivery outcomes instead")
    p = add("status", cmd_status, "Stream, consumer group, dead-letter and memory status.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
