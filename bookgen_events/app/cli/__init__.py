"""``bookgen-events``: thin subcommands over the runner and the ops functions.

One module per group of commands (:mod:`.serving`, :mod:`.streams`, :mod:`.recovery`,
:mod:`.tools`), each registering its own; errors the commands raise on purpose end as one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ...credentials import known_credentials
from ...errors import BookgenEventsError, ConfigError
from ...logs import configure_logging
from ...settings import load_settings
from . import endpoints, recovery, scheduling, serving, streams, subscribers, tools
from .base import Handler
from .serving import Terminated

COMMAND_GROUPS = (serving, streams, scheduling, recovery, endpoints, subscribers, tools)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bookgen-events", description="Event-sourced notifications on Redis Streams."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    for group in COMMAND_GROUPS:
        group.register(add)
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
