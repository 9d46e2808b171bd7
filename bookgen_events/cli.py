"""``bookgen-events``: thin subcommands over the runner and ops functions."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .credentials import credentials_notice, ensure_credentials, known_credentials
from .embedded import EmbeddedRedis
from .errors import BookgenEventsError, ConfigError
from .events import WIRE_FIELD, EventType
from .logs import configure_logging, get_logger
from .runner import (
    WORKERS,
    Unreachable,
    embedded_if_needed,
    enabled_workers,
    failure_reason,
    install_signal_handlers,
    load_worker,
    open_bus,
    probe_listen,
    refuse_open_websockets,
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


class Terminated(BaseException):
    """SIGTERM before the event loop owns signals: unwinds like Ctrl-C, so nothing is left."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    # Until the loop installs its own handlers (which set ``stop``), SIGTERM would kill the
    # process outright and leave the embedded server running; raised here, it unwinds
    # through every ``with`` that started something.
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the unwinding finish
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    with _sigterm_unwinds():
        gateway = load_worker("gateway") is not None
        if gateway:
            refuse_open_websockets(settings, args.host)
        from_env = settings
        settings = ensure_credentials(settings)
        if gateway:  # what the gateway would refuse, refused before anything is started
            _check_gateway(settings, args.host, args.port)
        with embedded_if_needed(settings) as (settings, server):
            asyncio.run(_reachable(settings))  # else one line, before any notice
            _print_where(from_env, server)
            names = enabled_workers(settings)
            options: dict[str, dict[str, Any]] = {name: {} for name in names}
            if gateway:
                options["gateway"] = {"host": args.host, "port": args.port}
            try:
                run_loop(_serve(settings, options))
            finally:
                # The loop is gone (SIGTERM is back to its default); stopping the embedded
                # server must not be cut short by a second one.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def _check_gateway(settings: Settings, host: str, port: int) -> None:
    from gateway.app import check_secret

    check_secret(settings)  # no or a short WEBSOCKET_JWT_SECRET
    probe_listen(host, port)


def _print_where(from_env: Settings, server: EmbeddedRedis | None) -> None:
    """One block on stderr: where generated credentials and the Redis password are kept
    (paths only: the values stay in their files)."""
    paragraphs = []
    notice = credentials_notice(from_env)
    if notice:
        paragraphs.append(notice)
    if server is not None:
        password = shlex.quote(str(server.password_file))
        paragraphs.append(
            f"no REDIS_URL: embedded server on 127.0.0.1:{server.port} (data in "
            f"{server.data_dir}); other shells and folders reach it with\n"
            f'  export REDIS_URL="redis://:$(cat {password})@127.0.0.1:{server.port}/0"'
        )
    if paragraphs:
        block = "\n".join(f"bookgen-events up: {text}" for text in paragraphs)
        print(block, file=sys.stderr, flush=True)


async def _reachable(settings: Settings) -> None:
    async with open_bus(settings):
        pass


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
    if args.start is not None:
        for line in asyncio.run(_position(settings, args.worker, args.start)):
            print(f"bookgen-events consume {args.worker}: {line}", file=sys.stderr, flush=True)
    start_metrics_server(args.metrics_port)
    run_loop(_serve(settings, {args.worker: overrides}))
    return 0


async def _position(settings: Settings, worker: str, start: str) -> list[str]:
    """``consume --from``: set the group's read position on purpose, before it runs."""
    from .replay import position_group

    async with open_bus(settings) as bus:
        # The logger projects the deliveries stream too; its ids are times like the events'.
        streams = [bus.names.events]
        if worker == "logger":
            streams.append(bus.names.deliveries)
        return [p.describe() for p in await position_group(bus, worker, start, streams)]


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    if load_worker("gateway") is None:
        raise ConfigError("the gateway is not available in this installation")
    refuse_open_websockets(settings, args.host)
    _check_gateway(settings, args.host, args.port)
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
    from .replay import before, parse_offset

    # --from: "$" (now), a stream id to start after, or an ISO time to start at.
    start = args.start.strip()
    if start != "$" and parse_offset(start) != start:
        start = before(parse_offset(start))

    async def go() -> None:
        async with open_bus(settings) as bus:
            stream = bus.names.deliveries if args.deliveries else bus.names.events
            # "$" is pinned to the newest id now: a later XREAD "$" would skip what arrived
            # between two reads.
            newest = await bus.revrange(count=1, stream=stream)
            newest_id = newest[0][0] if newest else "0-0"
            last = newest_id if start == "$" else start
            if args.count:
                # The last N entries (after --from, if given), then follow from there.
                floor = "-" if start == "$" else f"({start}"
                recent = await bus.revrange("+", floor, count=args.count, stream=stream)
                for entry_id, fields in reversed(recent):
                    _print_entry(entry_id, fields)
                last = recent[0][0] if recent else last
                if not args.follow:
                    return
            while True:
                entries = await bus.read(
                    last, count=100, block_ms=1000 if args.follow else None, stream=stream
                )
                for entry_id, fields in entries:
                    _print_entry(entry_id, fields)
                    last = entry_id
                if not args.follow and not entries:
                    return

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(go())
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
    from gateway.auth import MIN_SECRET_BYTES, mint_token, weak_secret

    secret = settings.websocket_jwt_secret
    if secret is None:
        raise ConfigError(
            "WEBSOCKET_JWT_SECRET is not set and `bookgen-events up` has not made one in "
            f"{Path(settings.embedded_data_dir).resolve()} (EMBEDDED_DATA_DIR): there is "
            "nothing to sign tokens with"
        )
    if weak_secret(secret.get_secret_value()):
        raise ConfigError(
            f"WEBSOCKET_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes, too weak for "
            "HS256: use a longer one (or unset it and let `bookgen-events up` make one)"
        )
    if not args.user_id and not args.job_id:
        raise ValueError("a token must name --user-id and/or at least one --job-id")
    cap = settings.websocket_token_max_ttl
    if args.ttl <= 0:
        raise ValueError("--ttl must be a positive number of seconds")
    if args.ttl > cap:
        raise ConfigError(
            f"--ttl {args.ttl} is over the cap of {cap:g} seconds set by "
            "WEBSOCKET_TOKEN_MAX_TTL: ask for less, or raise WEBSOCKET_TOKEN_MAX_TTL"
        )
    token = mint_token(
        secret.get_secret_value(), user_id=args.user_id, job_ids=args.job_id or [], ttl_s=args.ttl
    )
    sys.stdout.write(token + "\n")
    return 0


def cmd_rebuild_log(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.logger import DatabaseUnavailable, rebuild

    async def go() -> dict[str, Any]:
        async with open_bus(settings) as bus:
            return await rebuild(bus, settings)

    try:
        report = asyncio.run(go())
    except DatabaseUnavailable as exc:
        raise Unreachable(
            "the database", settings.database_url, "DATABASE_URL", failure_reason(exc)
        ) from None
    _print_json(report)
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
    target = "webhook_url" if result.channel == "webhook" else "emails"
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
    _print_json(
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
    from .ops import KNOWN_CHANNELS
    from .outcomes import now_ms
    from .replay import dead_letters, redrive

    if args.channel not in KNOWN_CHANNELS:
        raise ValueError(
            f"{args.channel!r} has no dead letters: only {', '.join(KNOWN_CHANNELS)} do"
        )
    if args.purge and args.redrive:
        raise ValueError("choose --redrive or --purge, not both")
    if args.purge and not args.yes and not sys.stdin.isatty():
        raise ValueError("--purge deletes for good: confirm with --yes (stdin is not a terminal)")

    async def go() -> int:
        async with open_bus(settings) as bus:
            letters = await dead_letters(bus, args.channel)
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
                count, poison = await redrive(bus, args.channel, args.id)
                print(f"redrove {count} dead letters to {args.channel}", file=sys.stderr)
                if poison:
                    print(f"left {len(poison)} poison entries (not events): {poison[:10]}",
                          file=sys.stderr)  # fmt: skip
                _print_json({"redriven": count, "poison_skipped": poison})
                return 0
            if args.purge:
                if not letters:
                    _print_json({"purged": 0})
                    return 0
                if not args.yes and not _confirm(
                    f"Delete {len(letters)} dead letters of {args.channel} for good? [y/N] "
                ):
                    print("nothing deleted", file=sys.stderr)
                    return 1
                # Only what was counted: a letter dead-lettered meanwhile is kept.
                _print_json({"purged": await bus.purge_dlq(args.channel, [i for i, _ in letters])})
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
                _print_json(rows)
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
        # No reachability check here: verify reports an unreachable Redis as one of its checks.
        async with open_bus(settings, check=False) as bus:
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
    p.add_argument(
        "--from",
        dest="start",
        metavar="ID|TIME",
        help="first set the group's position: 0 (every retained event), a stream id or ISO "
        "time (inclusive), or $ (only new events); a new group otherwise starts at the end",
    )
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
    p.add_argument(
        "--from",
        dest="start",
        default="$",
        help="a stream id to start after, or an ISO time to start at (default $: now)",
    )
    p.add_argument("--count", type=int, default=0, help="first print the last N entries")
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
    p.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="lifetime in seconds (at most WEBSOCKET_TOKEN_MAX_TTL)",
    )

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
    if args.command != "up":  # up makes the missing ones; the others use what it made
        settings = known_credentials(settings)
    try:
        return int(args.handler(args, settings))
    except (BookgenEventsError, ValueError) as exc:
        print(f"bookgen-events {args.command}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        return 0 if args.command == "up" else 130


if __name__ == "__main__":
    raise SystemExit(main())
