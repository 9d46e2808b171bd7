"""``subscribers set|show|rm``: subscriber profiles (SPEC 9), as ``PUT|GET|DELETE
/subscribers/{user_id}`` does over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ...settings import Settings
from ...subscribers import SubscriberRegistry
from ..runner import open_bus
from .base import Add, print_json


def _profile(args: argparse.Namespace) -> dict[str, Any]:
    profile: dict[str, Any] = {}
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        try:
            profile = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(profile, dict):
            raise ValueError("--json must be a JSON object")
    for option in ("email", "phone"):
        if getattr(args, option) is not None:
            profile[option] = getattr(args, option)
    return profile


def cmd_subscribers(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Any:
        async with open_bus(settings) as bus:
            registry = SubscriberRegistry.for_prefix(bus.redis, settings.stream_prefix)
            if args.subscribers_command == "set":
                return (await registry.put(args.user_id, _profile(args))).model_dump(mode="json")
            if args.subscribers_command == "show":
                return (await registry.get(args.user_id)).model_dump(mode="json")
            await registry.delete(args.user_id)
            return {"deleted": args.user_id}

    print_json(asyncio.run(go()))
    return 0


def register(add: Add) -> None:
    """Add ``subscribers`` and its subcommands to the parser."""
    group = add("subscribers", cmd_subscribers, "Set, show or remove a subscriber's profile.")
    sub = group.add_subparsers(dest="subscribers_command", required=True, metavar="ACTION")
    p = sub.add_parser("set", help="create or replace a profile")
    p.add_argument("user_id")
    p.add_argument("--email")
    p.add_argument("--phone", help="E.164, e.g. +33612345678")
    p.add_argument("--json", help="the whole profile as JSON ('-' reads stdin): preferences, "
                   "quiet_hours, digest; --email/--phone override its fields")  # fmt: skip
    for name, help_ in (("show", "print a profile"), ("rm", "remove a profile")):
        sub.add_parser(name, help=help_).add_argument("user_id")
