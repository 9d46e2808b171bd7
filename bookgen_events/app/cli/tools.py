"""``token``, ``demo`` and ``verify``: a newcomer's first hour."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.auth import MIN_SECRET_BYTES, mint_token, weak_secret

from ...errors import ConfigError
from ...settings import Settings
from ..runner import (
    open_bus,
)
from .base import Add, print_json


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import uuid

    from ..demo import run_demo  # here, not at the top: see app/workers.py (start-up time)

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

    print_json(asyncio.run(go()))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from ..verify import verify  # here: it imports aiohttp, SQLAlchemy and aiosmtplib

    async def go() -> list[Any]:
        # No reachability check here: verify reports an unreachable Redis as one of its checks.
        async with open_bus(settings, check=False) as bus:
            return await verify(bus, settings, args.webhook_url)

    checks = asyncio.run(go())
    for check in checks:
        mark = "skip" if check.skipped else ("ok" if check.ok else "FAIL")
        print(f"[{mark:>4}] {check.name:<9} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def register(add: Add) -> None:
    """Add this module's commands to the parser."""
    p = add("token", cmd_token, "Mint a WebSocket JWT for a user and/or jobs.")
    p.add_argument("--user-id")
    p.add_argument("--job-id", action="append", help="a job the holder may watch (repeatable)")
    p.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="lifetime in seconds (at most WEBSOCKET_TOKEN_MAX_TTL)",
    )
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
