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
from dataclasses import dataclass
from typing import Any

from ...bus import EventBus
from ...endpoints import Endpoint, EndpointRegistry
from ...events import WEBHOOK_EVENT_NAMES
from ...ops import endpoint_attempts, recover_endpoint
from ...replay import parse_time_ms
from ...settings import Settings
from ..runner import open_bus
from .base import Add, print_json


@dataclass(frozen=True)
class Context:
    """What an action works with: the registry, the bus it lives beside, the settings."""

    registry: EndpointRegistry
    bus: EventBus
    settings: Settings


Action = Callable[[Context, argparse.Namespace], Awaitable[Any]]


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


async def _add(ctx: Context, args: argparse.Namespace) -> Any:
    fields = _fields(args)
    if args.secret:
        fields["secret"] = args.secret
    if args.disabled:
        fields["disabled"] = True
    return _shown(await ctx.registry.create(fields), secret=True)


async def _list(ctx: Context, args: argparse.Namespace) -> Any:
    return [e.public() for e in await ctx.registry.all()]


async def _show(ctx: Context, args: argparse.Namespace) -> Any:
    return _shown(await ctx.registry.get(args.id))


async def _update(ctx: Context, args: argparse.Namespace) -> Any:
    fields = _fields(args)
    if not fields:
        raise ValueError("nothing to change: give at least one option")
    return _shown(await ctx.registry.update(args.id, fields))


async def _rm(ctx: Context, args: argparse.Namespace) -> Any:
    await ctx.registry.delete(args.id)
    return {"deleted": args.id}


async def _rotate(ctx: Context, args: argparse.Namespace) -> Any:
    rotated = await ctx.registry.rotate_secret(args.id, grace_s=ctx.settings.endpoint_secret_grace)
    return _shown(rotated, secret=True)


async def _enable(ctx: Context, args: argparse.Namespace) -> Any:
    return _shown(await ctx.registry.update(args.id, {"disabled": False}))


async def _disable(ctx: Context, args: argparse.Namespace) -> Any:
    return _shown(await ctx.registry.disable(args.id, args.reason))


async def _attempts(ctx: Context, args: argparse.Namespace) -> Any:
    await ctx.registry.get(args.id)
    return await endpoint_attempts(ctx.bus, args.id, limit=args.limit)


async def _recover(ctx: Context, args: argparse.Namespace) -> Any:
    await ctx.registry.get(args.id)
    count, poison = await recover_endpoint(ctx.bus, args.id, args.since_ms)
    return {"redriven": count, "poison_skipped": poison}


def cmd_endpoints(args: argparse.Namespace, settings: Settings) -> int:
    action: Action = args.action
    if getattr(args, "since", None) is not None:  # before anything is asked of Redis
        args.since_ms = parse_time_ms(args.since)

    async def go() -> Any:
        async with open_bus(settings) as bus:
            registry = EndpointRegistry.for_prefix(bus.redis, settings.stream_prefix)
            return await action(Context(registry, bus, settings), args)

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
