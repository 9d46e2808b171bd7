"""``endpoints add|list|show|update|rm|rotate-secret|enable|disable|attempts|recover``:
the registry (SPEC 9).

Each prints the endpoint as JSON; ``add`` and ``rotate-secret`` include its ``secret``,
shown then and never again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ...endpoints import Endpoint, EndpointRegistry
from ...events import WEBHOOK_EVENT_NAMES
from ...ops import endpoint_attempts, recover_endpoint
from ...settings import Settings
from ..runner import open_bus
from .base import Add, print_json

Action = Callable[[EndpointRegistry, argparse.Namespace, Settings], Awaitable[Any]]


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The endpoint fields given on the command line (absent options are left out)."""
    fields: dict[str, Any] = {}
    for option, field in [("url", "url"), ("type", "type"), ("description", "description"),
                          ("rate_limit", "rate_limit_per_minute"), ("event_type", "event_types"),
                          ("job_id", "job_ids"), ("user_id", "user_ids")]:  # fmt: skip
        value = getattr(args, option, None)
        if value is not None:
            fields[field] = value
    if args.header:
        pairs = [h.partition("=") for h in args.header]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("--header takes NAME=VALUE")
        fields["headers"] = {name.strip(): value for name, _, value in pairs}
    if args.metadata is not None:
        try:
            fields["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            raise ValueError(f"--metadata is not valid JSON: {exc}") from None
    return fields


def _shown(endpoint: Endpoint, *, secret: bool = False) -> dict[str, Any]:
    return {**endpoint.public(), **({"secret": endpoint.secret} if secret else {})}


async def _add(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    fields = _fields(args)
    if args.secret:
        fields["secret"] = args.secret
    if args.disabled:
        fields["disabled"] = True
    return _shown(await registry.create(fields), secret=True)


async def _list(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    return [e.public() for e in await registry.all()]


async def _show(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    return _shown(await registry.get(args.id))


async def _update(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    fields = _fields(args)
    if not fields:
        raise ValueError("nothing to change: give at least one option")
    return _shown(await registry.update(args.id, fields))


async def _rm(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    await registry.delete(args.id)
    return {"deleted": args.id}


async def _rotate(registry: EndpointRegistry, args: argparse.Namespace, settings: Settings) -> Any:
    rotated = await registry.rotate_secret(args.id, grace_s=settings.endpoint_secret_grace)
    return _shown(rotated, secret=True)


async def _enable(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    return _shown(await registry.update(args.id, {"disabled": False}))


async def _disable(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    return _shown(await registry.disable(args.id, args.reason))


async def _attempts(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    await registry.get(args.id)
    return await endpoint_attempts(args.bus, args.id, limit=args.limit)


async def _recover(registry: EndpointRegistry, args: argparse.Namespace, _: Settings) -> Any:
    await registry.get(args.id)
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    count, poison = await recover_endpoint(args.bus, args.id, int(since.timestamp() * 1000))
    return {"redriven": count, "poison_skipped": poison}


def cmd_endpoints(args: argparse.Namespace, settings: Settings) -> int:
    action: Action = args.action
    if getattr(args, "since", None) is not None:
        try:
            datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--since {args.since!r} is not an ISO time (2026-01-31T12:00Z)"
            ) from None

    async def go() -> Any:
        async with open_bus(settings) as bus:
            args.bus = bus
            registry = EndpointRegistry.for_prefix(bus.redis, settings.stream_prefix)
            return await action(registry, args, settings)

    print_json(asyncio.run(go()))
    return 0


def _filters(p: argparse.ArgumentParser, *, url_required: bool) -> None:
    if url_required:
        p.add_argument("url", help="where to POST (http or https)")
    else:
        p.add_argument("--url", help="where to POST (http or https)")
    p.add_argument("--type", choices=["webhook", "slack", "discord"])
    p.add_argument("--description")
    p.add_argument("--event-type", action="append", choices=sorted(WEBHOOK_EVENT_NAMES.values()),
                   help="only these events (repeatable; default: all)")  # fmt: skip
    p.add_argument("--job-id", action="append", help="only these jobs (repeatable)")
    p.add_argument("--user-id", action="append", help="only these users (repeatable)")
    p.add_argument("--rate-limit", type=int, help="deliveries per minute at most")
    p.add_argument("--header", action="append", help="an extra request header NAME=VALUE")
    p.add_argument("--metadata", help="a JSON object kept with the endpoint")


def register(add: Add) -> None:
    """Add ``endpoints`` and its subcommands to the parser."""
    group = add("endpoints", cmd_endpoints, "Register, change and remove webhook endpoints.")
    sub = group.add_subparsers(dest="endpoints_command", required=True, metavar="ACTION")

    def action(name: str, run: Action, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(action=run)
        return p

    p = action("add", _add, "Register an endpoint; prints it with its secret (shown once).")
    _filters(p, url_required=True)
    p.add_argument("--secret", help="a whsec_ secret to use (default: a new one)")
    p.add_argument("--disabled", action="store_true", help="register it disabled")
    action("list", _list, "Every endpoint, without secrets.")
    for name, run, help_ in [
        ("show", _show, "One endpoint, without its secret."),
        ("rm", _rm, "Remove an endpoint."),
        ("rotate-secret", _rotate, "A new secret; the old one signs beside it for a grace time."),
        ("enable", _enable, "Deliver to it again."),
    ]:
        action(name, run, help_).add_argument("id")
    p = action("update", _update, "Change an endpoint's fields.")
    p.add_argument("id")
    _filters(p, url_required=False)
    p = action("attempts", _attempts, "Its most recent delivery attempts, newest first.")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=50)
    p = action("recover", _recover, "Redeliver what was dead-lettered for it since a time.")
    p.add_argument("id")
    p.add_argument("--since", required=True, help="an ISO time, e.g. 2026-01-31T12:00:00Z")
    p = action("disable", _disable, "Stop delivering to it, with a reason.")
    p.add_argument("id")
    p.add_argument("--reason", default="disabled by an operator")
