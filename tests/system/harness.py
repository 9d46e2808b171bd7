"""The system under test as real processes, and the WebSocket client that watches it.

:class:`Cluster` runs ``bookgen-events consume webhook|email|logger`` and ``gateway`` as
separate process groups that can be SIGKILLed and restarted; :class:`WsWatcher` follows one
job over the gateway's WebSocket and resumes with ``last_event_id`` after every drop. The
other peers come from ``tests.support``: the webhook ``Receiver`` (which can flap between 500
and 200) and the ``SmtpServer`` (aiosmtpd, restartable on its port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bookgen_events import Event, EventBus
from bookgen_events.events import make_event
from tests.support.processes import process_env, spawn
from tests.support.waits import eventually, wait_healthy
from tests.support.webhooks import SECRET

CONSUMERS = ("webhook", "email", "logger")


# -- events ----------------------------------------------------------------------------------


def make_events(
    count: int, *, jobs: Sequence[str], webhook_url: str, rng: random.Random
) -> list[Event]:
    """``count`` valid events spread over ``jobs``: progress updates, some completions,
    one or two email recipients each, all aimed at ``webhook_url``."""
    events = []
    for i in range(count):
        emails = [f"reader{i % 7}@example.com"]
        if rng.random() < 0.2:
            emails.append(f"editor{i % 3}@example.org")
        if i % 10 == 9:
            kind, data = "completion", {"biography_id": i, "character_name": "Ada Lovelace"}
        else:
            kind, data = "progress_update", {"progress": i % 101, "phase": "writing"}
        events.append(
            make_event(
                {
                    "type": kind,
                    "job_id": jobs[i % len(jobs)],
                    "user_id": "u-system",
                    "data": data,
                    "webhook_url": webhook_url,
                    "emails": emails,
                }
            )
        )
    return events


# -- processes -------------------------------------------------------------------------------


def deployment_env(
    *, redis_url: str, prefix: str, database_url: str, smtp_port: int, **extra: str
) -> dict[str, str]:
    """The environment every ``bookgen-events`` process of a system test runs with."""
    return process_env(
        inherit=("PATH", "HOME", "LANG", "TMPDIR"),
        REDIS_URL=redis_url,
        STREAM_PREFIX=prefix,
        DATABASE_URL=database_url,
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_TIMEOUT="2",
        WEBHOOK_RETRY_SCHEDULE="200ms,400ms,800ms",
        WEBHOOK_MAX_RETRIES="12",
        EMAIL_RETRY_SCHEDULE="200ms,400ms,800ms",
        EMAIL_MAX_RETRIES="12",
        EMAIL_ENABLED="true",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_USE_TLS="false",
        SMTP_TIMEOUT="3",
        CLAIM_IDLE_MS="1000",
        SHUTDOWN_GRACE_S="2",
        NOTIFICATION_RATE_LIMIT_PER_MINUTE="100000",
        NOTIFICATION_RATE_LIMIT_PER_HOUR="1000000",
        WEBSOCKET_AUTH="none",
        LOG_LEVEL="WARNING",
        **extra,
    )


class Cluster:
    """``bookgen-events`` worker processes, each in its own process group, logging to files."""

    def __init__(
        self, env: dict[str, str], workdir: Path, gateway_port: int, bus: EventBus
    ) -> None:
        self.env = env
        self.bus = bus  # to see the consumers' groups
        self.workdir = workdir  # also the cwd, so no stray .env is read
        self.gateway_port = gateway_port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()

    @property
    def gateway_http(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, role: str) -> None:
        """Start ``role`` (a consumer group name or ``gateway``), replacing a dead one."""
        current = self.procs.get(role)
        if current is not None and current.poll() is None:
            raise RuntimeError(f"{role} is already running")
        args = (
            ["gateway", "--port", str(self.gateway_port)]
            if role == "gateway"
            else ["consume", role]
        )
        self.starts[role] += 1
        log = self.workdir / f"{role}.{self.starts[role]}.log"
        self.procs[role] = spawn(args, self.env, log, cwd=self.workdir, new_session=True)

    async def start_all(self, roles: Sequence[str] = (*CONSUMERS, "gateway")) -> None:
        """Start ``roles`` and wait until they are ready: the gateway answers and every
        consumer has its group, since a group created after an event starts after it (SPEC 11)."""
        for role in roles:
            self.start(role)
        if "gateway" in roles:
            await self.wait_gateway()
        await self.wait_groups([role for role in roles if role in CONSUMERS])

    async def wait_groups(self, consumers: Sequence[str], within: float = 20.0) -> None:
        """Wait until each of ``consumers`` has its group on the events stream (and the logger
        its group on the deliveries stream)."""

        async def ready() -> bool:
            on_events = {g["name"] for g in await self.bus.groups_info()}
            if not set(consumers) <= on_events:
                return False
            if "logger" not in consumers:
                return True
            on_deliveries = await self.bus.groups_info(self.bus.names.deliveries)
            return "logger" in {g["name"] for g in on_deliveries}

        await eventually(ready, within, f"the groups of {', '.join(consumers)}", step=0.05)

    async def wait_gateway(self, within: float = 20.0) -> None:
        def alive() -> None:
            proc = self.procs["gateway"]
            if proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {proc.returncode}: {self.log('gateway')}"
                )

        await wait_healthy(self.gateway_http, within, alive=alive, step=0.1)

    async def kill(self, role: str) -> None:
        """SIGKILL the role's whole process group and reap it."""
        proc = self.procs[role]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await eventually(lambda: proc.poll() is not None, 10, f"{role} to die")
        self.kills[role] += 1

    async def stop_all(self, grace: float = 15.0) -> dict[str, int]:
        """SIGTERM every live process group, SIGKILL what is left after ``grace``; exit codes."""
        live = {role: p for role, p in self.procs.items() if p.poll() is None}
        for proc in live.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _ in range(int(grace / 0.05)):
            if all(p.poll() is not None for p in live.values()):
                break
            await asyncio.sleep(0.05)
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return {role: int(p.returncode) for role, p in live.items()}

    def log(self, role: str, tail: int = 3000) -> str:
        path = self.workdir / f"{role}.{self.starts[role]}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def crashes(self) -> list[str]:
        """Log files of every run that printed a Python traceback outside a log record."""
        return [
            p.name
            for p in sorted(self.workdir.glob("*.log"))
            if any(
                line.startswith("Traceback") for line in p.read_text(errors="replace").splitlines()
            )
        ]


# -- the WebSocket client --------------------------------------------------------------------


class WsWatcher:
    """Watches one job over the gateway, resuming after ``last_event_id`` on every reconnect.

    Starts from ``0-0``, so it sees the job's whole history whenever it first connects.
    """

    def __init__(self, base: str, job_id: str) -> None:
        self.base = base
        self.job_id = job_id
        self.messages: list[dict[str, Any]] = []  # event messages, in arrival order
        self.connects = 0
        self.resyncs = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def last_id(self) -> str:
        return self.messages[-1]["id"] if self.messages else "0-0"

    def event_ids(self) -> list[str]:
        return [m["event_id"] for m in self.messages]

    def stream_ids(self) -> list[str]:
        return [m["id"] for m in self.messages]

    def start(self) -> WsWatcher:
        self._task = asyncio.create_task(self._run(), name=f"ws-{self.job_id}")
        return self

    async def _run(self) -> None:
        while True:
            url = f"{self.base}/ws/notifications?job_id={self.job_id}&last_event_id={self.last_id}"
            try:
                async with connect(url, open_timeout=2, close_timeout=1) as ws:
                    self.connects += 1
                    async for raw in ws:
                        message = json.loads(raw)
                        if message.get("type") == "resync_required":
                            self.resyncs += 1
                        else:
                            self.messages.append(message)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
