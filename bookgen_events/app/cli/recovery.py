"""``replay``, ``dlq`` and ``rebuild-log``: put failed or lost work right."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ...channel import DEAD_LETTER_GROUPS, GROUP_CHANNELS
from ...credentials import redact_url
from ...endpoints import EndpointRegistry, endpoint_recipient
from ...errors import Unreachable
from ...events import EventType
from ...outcomes import now_ms
from ...replay import replay
from ...settings import Settings
from ..runner import (
    failure_reason,
    open_bus,
)
from .base import Add, print_json


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import Progress

    if args.endpoint and args.channel != "webhook":
        raise ValueError("--endpoint replays to one webhook endpoint: use it with `replay webhook`")

    async def go() -> Any:
        async with open_bus(settings) as bus:
            targeting: dict[str, Any] = {}
            if args.endpoint:  # to that endpoint only, the events its filters want
                registry = EndpointRegistry.for_prefix(bus.redis, settings.stream_prefix)
                endpoint = await registry.get(args.endpoint)
                recipient = endpoint_recipient(endpoint)
                targeting = {
                    "recipients": lambda e: [recipient] if endpoint.wants(e) else [],
                    "only": recipient,
                }
            with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
                task = progress.add_task("scanning", total=None)
                return await replay(
                    bus,
                    args.channel,
                    args.start,
                    args.end or "+",
                    job_id=args.job_id,
                    type_=args.type,
                    dry_run=args.dry_run,
                    on_progress=lambda done, total: progress.update(
                        task, completed=done, total=total
                    ),
                    **targeting,
                )

    result = asyncio.run(go())
    verb = "would redeliver" if result.dry_run else "scheduled for redelivery"
    target = "a recipient"
    if args.endpoint:
        target = f"a match for endpoint {args.endpoint}"
    notes = [
        f"{result.no_recipient} matching events without {target} skipped"
        if result.no_recipient
        else "",
        f"{result.skipped_poison} undecodable entries skipped" if result.skipped_poison else "",
    ]
    print(
        f"{result.matched} of {result.scanned} events {verb} to {result.channel} "
        f"(range {result.start} .. {result.end}; oldest retained {result.first_retained})"
        + "".join(f"; {note}" for note in notes if note),
        file=sys.stderr,
    )
    print_json(
        {
            "channel": result.channel,
            "matched": result.matched,
            "scheduled": result.scheduled,
            "scanned": result.scanned,
            "no_recipient": result.no_recipient,
            "dry_run": result.dry_run,
            "event_ids": result.event_ids if result.dry_run else result.event_ids[:1000],
        }
    )
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:

    if args.channel not in DEAD_LETTER_GROUPS:
        raise ValueError(
            f"{args.channel!r} has no dead letters: only {', '.join(DEAD_LETTER_GROUPS)} do"
        )
    if args.purge and args.redrive:
        raise ValueError("choose --redrive or --purge, not both")
    if args.purge and not args.yes and not sys.stdin.isatty():
        raise ValueError("--purge deletes for good: confirm with --yes (stdin is not a terminal)")

    async def go() -> int:
        async with open_bus(settings) as bus:
            letters = await bus.all_dead_letters.letters(args.channel)
            if args.id:
                wanted = set(args.id)
                letters = [(i, d) for i, d in letters if i in wanted or d.event_id in wanted]
                found = {i for i, _ in letters} | {d.event_id for _, d in letters}
                unknown = [i for i in dict.fromkeys(args.id) if i not in found]
                if unknown:
                    action = "redriven" if args.redrive else "purged" if args.purge else "listed"
                    raise ValueError(
                        f"not found in the {args.channel} dead letters: {', '.join(unknown)}; "
                        f"nothing {action}"
                    )
            if args.redrive:
                count, poison = await bus.all_dead_letters.redrive(args.channel, args.id)
                print(f"redrove {count} dead letters to {args.channel}", file=sys.stderr)
                if poison:
                    print(f"left {len(poison)} poison entries (not events): {poison[:10]}",
                          file=sys.stderr)  # fmt: skip
                print_json({"redriven": count, "poison_skipped": poison})
                return 0
            if args.purge:
                if not letters:
                    print_json({"purged": 0})
                    return 0
                if not args.yes and not _confirm(
                    f"Delete {len(letters)} dead letters of {args.channel} for good? [y/N] "
                ):
                    print("nothing deleted", file=sys.stderr)
                    return 1
                # Only what was counted: a letter dead-lettered meanwhile is kept.
                print_json(
                    {
                        "purged": await bus.all_dead_letters.purge(
                            args.channel, [i for i, _ in letters]
                        )
                    }
                )
                return 0
            now = now_ms()
            rows = [
                {
                    "dlq_id": dlq_id,
                    "event_id": d.event_id,
                    "recipient": d.recipient,
                    "reason": d.reason,
                    "attempts": d.attempts,
                    "poison": d.poison,
                    "age_s": round((now - d.at_ms) / 1000, 1),
                }
                for dlq_id, d in letters
            ]
            if args.json:
                print_json(rows)
            else:
                _print_dlq(args.channel, rows)
            return 0

    return asyncio.run(go())


def _confirm(prompt: str) -> bool:
    """Ask on the terminal (the prompt on stderr, so stdout stays machine-readable)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    answer = sys.stdin.readline()  # "" at end of input: a no
    return answer.strip().lower() in ("y", "yes")


def _print_dlq(channel: str, rows: list[dict[str, Any]]) -> None:
    """A table where the console is wide enough, else one short block per letter: either way
    ids are whole and on one line (they are copied into --id), long text is folded."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    console.print(Text(f"{len(rows)} dead letters in {channel}", style="bold"))
    ids = [(row["dlq_id"], row["event_id"] or "(poison)") for row in rows]
    id_width = max([len(d) + len(e) for d, e in ids], default=0)
    if console.width >= id_width + 60:
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("dlq id", no_wrap=True)
        table.add_column("event id", no_wrap=True)
        table.add_column("tries", no_wrap=True, justify="right")
        table.add_column("age", no_wrap=True, justify="right")
        table.add_column("recipient / reason", overflow="fold", ratio=1)
        for row, (dlq_id, event_id) in zip(rows, ids, strict=True):
            details = Text(f"{row['recipient']}\n{row['reason'][:300]}")
            table.add_row(dlq_id, event_id, str(row["attempts"]), _age(row), details)
        console.print(table)
        return
    for row, (dlq_id, event_id) in zip(rows, ids, strict=True):
        # Soft wrap: the terminal folds long lines; nothing is cut and no id is split.
        console.print(Text(f"{dlq_id}  event {event_id}"), soft_wrap=True)
        line = f"  {row['attempts']} tries, {_age(row)} old, to {row['recipient']}"
        console.print(Text(line), soft_wrap=True)
        console.print(Text(f"  {row['reason'][:300]}"), soft_wrap=True)


def _age(row: dict[str, Any]) -> str:
    return f"{row['age_s']:.0f}s"


def cmd_rebuild_log(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.logger import DatabaseUnavailable, rebuild  # SQLAlchemy: only here

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            return await rebuild(bus, settings)

    try:
        report = asyncio.run(go())
    except DatabaseUnavailable as exc:
        raise Unreachable(
            "the database", redact_url(settings.database_url), "DATABASE_URL", failure_reason(exc)
        ) from None
    print_json(report)
    return 0


def register(add: Add) -> None:
    """Add this module's commands to the parser."""
    p = add("replay", cmd_replay, "Redeliver events from stream offsets to one channel only.")
    p.add_argument("channel", choices=GROUP_CHANNELS)
    p.add_argument("--from", dest="start", required=True, help="stream id or ISO time (inclusive)")
    p.add_argument("--to", dest="end", help="stream id or ISO time (inclusive; default: newest)")
    p.add_argument("--job-id", help="only this job's events")
    p.add_argument("--type", choices=[t.value for t in EventType], help="only this type")
    p.add_argument("--dry-run", action="store_true", help="list what would be redelivered")
    p.add_argument("--endpoint", metavar="ID", help="redeliver to this webhook endpoint only")
    p = add("dlq", cmd_dlq, "List, redrive or purge a channel's dead letters.")
    p.add_argument("channel", help="webhook, email or logger (the channels with dead letters)")
    p.add_argument("--redrive", action="store_true", help="send them back through the channel")
    p.add_argument(
        "--purge",
        action="store_true",
        help="delete them for good: asks first on a terminal; elsewhere needs --yes",
    )
    p.add_argument(
        "--id", action="append", help="only this dlq id or event id (repeatable; all must exist)"
    )
    p.add_argument("--yes", action="store_true", help="purge without asking")
    p.add_argument("--json", action="store_true", help="machine-readable listing")
    p = add("rebuild-log", cmd_rebuild_log, "Recreate the notifications table from the streams.")
