"""``bookgen-events``: thin subcommands over the runner and ops functions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import BookgenEventsError, ConfigError
from .events import WIRE_FIELD, EventType
from .logs import configure_logging, get_logger
from .runner import (
    WORKERS,
    embedded_if_needed,
    enabled_workers,
    install_signal_handlers,
    load_worker,
    open_bus,
    run_loop,
    run_workers,
    start_metrics_server,
)
from .settings import Settings, load_settings

log = get_logger("bookgen_events.cli")
Handler = Callable[[argparse.Namespace, Settings], int]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


# -- up / consume / gateway ----------------------------------------------------------------


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    with embedded_if_needed(settings) as settings:
        if settings.websocket_auth == "jwt" and settings.websocket_jwt_secret is None:
            log.warning(
                "WEBSOCKET_JWT_SECRET is not set: WebSocket auth is OFF (WEBSOCKET_AUTH=none). "
                "Anyone who can reach the gateway can watch any job. Set WEBSOCKET_JWT_SECRET."
            )
            settings = settings.model_copy(update={"websocket_auth": "none"})
        names = enabled_workers(settings)
        options: dict[str, dict[str, Any]] = {name: {} for name in names}
        if load_worker("gateway") is not None:
            options["gateway"] = {"host": args.host, "port": args.port}
        run_loop(_serve(settings, options))
    return 0


async def _serve(settings: Settings, workers: dict[str, dict[str, Any]]) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_workers(settings, workers, stop)


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    overrides: dict[str, Any] = {}
    if args.concurrency:
        overrides["concurrency"] = args.concurrency
    if args.name:
        overrides["name"] = args.name
    start_metrics_server(args.metrics_port)
    run_loop(_serve(settings, {args.worker: overrides}))
    return 0


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    if load_worker("gateway") is None:
        raise SystemExit("the gateway is not available in this installation")
    run_loop(_serve(settings, {"gateway": {"host": args.host, "port": args.port}}))
    return 0


# -- emit / tail / status --------------------------------------------------------------------


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

    _print_json({"stream_id": asyncio.run(go())})
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> None:
        async with open_bus(settings) as bus:
            stream = bus.names.deliveries if args.deliveries else bus.names.events
            last = args.start
            if last != "$" and args.count:
                # Start from the last N entries, then follow.
                recent = await bus.revrange(count=args.count, stream=stream)
                for entry_id, fields in reversed(recent):
                    _print_entry(entry_id, fields)
                last = recent[0][0] if recent else "0-0"
            while True:
                entries = await bus.read(
                    last, count=100, block_ms=1000 if args.follow else None, stream=stream
                )
                for entry_id, fields in entries:
                    _print_entry(entry_id, fields)
                    last = entry_id
                if not args.follow and not entries:
                    return

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


def _print_entry(entry_id: str, fields: dict[str, str]) -> None:
    if WIRE_FIELD in fields:
        try:
            _print_json({"stream_id": entry_id, **json.loads(fields[WIRE_FIELD])})
            return
        except ValueError:
            pass
    _print_json({"stream_id": entry_id, **fields})


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .ops import status

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            return await status(bus)

    report = asyncio.run(go())
    if args.json:
        _print_json(report)
    else:
        _print_status(report)
    return 0


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
    table = Table("channel", "dead letters", "scheduled retries")
    for channel, size in report["dead_letters"].items():
        table.add_row(channel, str(size), str(report["scheduled"].get(channel, 0)))
    console.print(table)
    redis = report["redis"]
    console.print(f"redis {redis['version']}, memory {redis['used_memory_human']}")


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.auth import mint_token

    if settings.websocket_jwt_secret is None:
        raise ConfigError("WEBSOCKET_JWT_SECRET is not set: there is nothing to sign tokens with")
    if not args.user_id and not args.job_id:
        raise ValueError("a token must name --user-id and/or at least one --job-id")
    token = mint_token(
        settings.websocket_jwt_secret.get_secret_value(),
        user_id=args.user_id,
        job_ids=args.job_id or [],
        ttl_s=args.ttl,
    )
    sys.stdout.write(token + "\n")
    return 0


def cmd_rebuild_log(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.logger import rebuild

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            return await rebuild(bus, settings)

    _print_json(asyncio.run(go()))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import Progress

    from .replay import replay

    async def go() -> Any:
        async with open_bus(settings) as bus:
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
                )

    result = asyncio.run(go())
    verb = "would redeliver" if result.dry_run else "scheduled for redelivery"
    print(
        f"{result.matched} of {result.scanned} events {verb} to {result.channel} "
        f"(range {result.start} .. {result.end}; oldest retained {result.first_retained})"
        + (
            f"; {result.skipped_poison} undecodable entries skipped"
            if result.skipped_poison
            else ""
        ),
        file=sys.stderr,
    )
    _print_json(
        {
            "channel": result.channel,
            "matched": result.matched,
            "scheduled": result.scheduled,
            "scanned": result.scanned,
            "dry_run": result.dry_run,
            "event_ids": result.event_ids if result.dry_run else result.event_ids[:1000],
        }
    )
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from .outcomes import now_ms
    from .replay import dead_letters, redrive

    if args.purge and not args.yes:
        target = f"{len(args.id)} dead letters" if args.id else "ALL dead letters"
        if not sys.stdin.isatty():
            raise ValueError("--purge deletes for good: confirm with --yes")
        if input(f"Delete {target} of {args.channel}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1

    async def go() -> int:
        async with open_bus(settings) as bus:
            if args.redrive:
                count, poison = await redrive(bus, args.channel, args.id)
                print(f"redrove {count} dead letters to {args.channel}", file=sys.stderr)
                if poison:
                    print(f"left {len(poison)} poison entries (not events): {poison[:10]}",
                          file=sys.stderr)  # fmt: skip
                _print_json({"redriven": count, "poison_skipped": poison})
                return 0
            if args.purge:
                _print_json({"purged": await bus.purge_dlq(args.channel, args.id)})
                return 0
            letters = await dead_letters(bus, args.channel)
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
                _print_json(rows)
            else:
                _print_dlq(args.channel, rows)
            return 0

    return asyncio.run(go())


def _print_dlq(channel: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("dlq id", "event id", "recipient", "attempts", "age", "reason",
                  title=f"{len(rows)} dead letters in {channel}")  # fmt: skip
    for row in rows:
        table.add_row(
            row["dlq_id"],
            row["event_id"] or "(poison)",
            row["recipient"],
            str(row["attempts"]),
            f"{row['age_s']:.0f}s",
            row["reason"][:120],
        )
    Console().print(table)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import uuid

    from .demo import run_demo

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            return await run_demo(
                bus,
                settings,
                job_id=args.job_id or str(uuid.uuid4().int % 100_000),
                steps=args.steps,
                interval=args.interval,
                fail=args.fail,
                webhook_url=args.webhook_url,
                email=args.email,
                user_id=args.user_id,
                wait_s=args.wait,
            )

    _print_json(asyncio.run(go()))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from .verify import verify

    async def go() -> list[Any]:
        async with open_bus(settings) as bus:
            return await verify(bus, settings, args.webhook_url)

    checks = asyncio.run(go())
    for check in checks:
        mark = "skip" if check.skipped else ("ok" if check.ok else "FAIL")
        print(f"[{mark:>4}] {check.name:<9} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bookgen-events", description="Event-sourced notifications on Redis Streams."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add("up", cmd_up, "Run the gateway and every enabled consumer in one process.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = add("gateway", cmd_gateway, "Run the WebSocket/HTTP gateway.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = add("consume", cmd_consume, "Run one consumer group worker.")
    p.add_argument("worker", choices=sorted(set(WORKERS) - {"gateway"}))
    p.add_argument("--concurrency", type=int, help="entries processed at once")
    p.add_argument("--name", help="consumer name (stable names redo their own pending work)")
    p.add_argument("--metrics-port", type=int, help="expose Prometheus metrics on this port")

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
    p.add_argument("--from", dest="start", default="$", help="stream id to start after ($: now)")
    p.add_argument("--count", type=int, default=0, help="first show the last N entries")
    p.add_argument("--no-follow", dest="follow", action="store_false")
    p.add_argument("--deliveries", action="store_true", help="tail delivery outcomes instead")

    p = add("replay", cmd_replay, "Redeliver events from stream offsets to one channel only.")
    p.add_argument("channel", choices=["webhook", "email"])
    p.add_argument("--from", dest="start", required=True, help="stream id or ISO time (inclusive)")
    p.add_argument("--to", dest="end", help="stream id or ISO time (inclusive; default: newest)")
    p.add_argument("--job-id", help="only this job's events")
    p.add_argument("--type", choices=[t.value for t in EventType], help="only this type")
    p.add_argument("--dry-run", action="store_true", help="list what would be redelivered")

    p = add("dlq", cmd_dlq, "List, redrive or purge a channel's dead letters.")
    p.add_argument("channel", help="webhook, email or logger")
    p.add_argument("--redrive", action="store_true", help="send them back through the channel")
    p.add_argument("--purge", action="store_true", help="delete them (asks for confirmation)")
    p.add_argument("--id", action="append", help="only this dlq id or event id (repeatable)")
    p.add_argument("--yes", action="store_true", help="do not ask before purging")
    p.add_argument("--json", action="store_true", help="machine-readable listing")

    p = add("demo", cmd_demo, "Run a simulated biography job through every configured channel.")
    p.add_argument("--job-id", help="default: a random number")
    p.add_argument("--user-id")
    p.add_argument("--steps", type=int, default=10, help="progress updates from 0 to 100")
    p.add_argument("--interval", type=float, default=0.3, help="seconds between updates")
    p.add_argument("--fail", action="store_true", help="end in a critical error instead")
    p.add_argument("--webhook-url", help="also deliver every event to this webhook")
    p.add_argument("--email", help="also mail this address (needs EMAIL_ENABLED)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for outcomes")

    p = add("verify", cmd_verify, "Check Redis, the database, SMTP and a webhook target.")
    p.add_argument("--webhook-url", help="POST a signed test ping to this URL")

    p = add("token", cmd_token, "Mint a WebSocket JWT for a user and/or jobs.")
    p.add_argument("--user-id")
    p.add_argument("--job-id", action="append", help="a job the holder may watch (repeatable)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    p = add("rebuild-log", cmd_rebuild_log, "Recreate the notifications table from the streams.")

    p = add("status", cmd_status, "Stream, consumer group, dead-letter and memory status.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"bookgen-events: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.handler(args, settings))
    except (BookgenEventsError, ValueError) as exc:
        print(f"bookgen-events {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
