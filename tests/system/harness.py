"""The system under test as real processes, and the real peers that watch it.

:class:`Cluster` runs ``bookgen-events consume webhook|email|logger`` and ``gateway`` as
separate process groups that can be SIGKILLed and restarted; :class:`HookSink` is a uvicorn
webhook receiver that can flap between 500 and 200; :class:`WsWatcher` follows one job over
the gateway's WebSocket and resumes with ``last_event_id`` after every drop. The SMTP peer is
:class:`tests.consumers.smtp_server.SmtpServer` (aiosmtpd, restartable on its port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bookgen_events import Event
from bookgen_events.events import make_event
from tests.consumers.smtp_server import Recorder
from tests.helpers import eventually, free_port

__all__ = ["eventually", "free_port"]  # re-exported for the system tests

CLI = str(Path(sys.executable).with_name("bookgen-events"))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks docs' example
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


def process_env(
    *, redis_url: str, prefix: str, database_url: str, smtp_port: int, **extra: str
) -> dict[str, str]:
    """The environment every ``bookgen-events`` process of a system test runs with."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(
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
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Cluster:
    """``bookgen-events`` worker processes, each in its own process group, logging to files."""

    def __init__(self, env: dict[str, str], workdir: Path, gateway_port: int) -> None:
        self.env = env
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
        log = open(self.workdir / f"{role}.{self.starts[role]}.log", "wb")
        with log:
            self.procs[role] = subprocess.Popen(
                [CLI, *args],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start_all(self, roles: Sequence[str] = (*CONSUMERS, "gateway")) -> None:
        for role in roles:
            self.start(role)
        if "gateway" in roles:
            await self.wait_gateway()

    async def wait_gateway(self, within: float = 20.0) -> None:
        async def healthy() -> bool:
            proc = self.procs["gateway"]
            if proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {proc.returncode}: {self.log('gateway')}"
                )
            async with httpx.AsyncClient() as client:
                try:
                    return (await client.get(f"{self.gateway_http}/health", timeout=1)).is_success
                except httpx.TransportError:
                    return False

        await eventually(healthy, within, "the gateway to answer /health", step=0.1)

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


# -- the webhook receiver --------------------------------------------------------------------


class HookSink:
    """A uvicorn webhook receiver on loopback recording each ``webhook-id`` it answered 2xx.

    ``flap(down, up)`` makes it answer 500 for ``down`` seconds, then 200 for ``up``, repeating.
    """

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # webhook-id -> 2xx answers
        self.refused = 0
        self.requests = 0
        self.delay = 0.0
        self._flap: tuple[float, float, float] | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    def flap(self, down: float, up: float) -> None:
        self._flap = (time.monotonic(), down, up)

    def steady(self) -> None:
        self._flap = None

    def _failing(self) -> bool:
        if self._flap is None:
            return False
        since, down, up = self._flap
        return (time.monotonic() - since) % (down + up) < down

    async def _hook(self, request: Request) -> Response:
        await request.body()
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._failing():
            self.refused += 1
            return Response(b"down", status_code=500)
        self.accepted[request.headers.get("webhook-id", "")] += 1
        return Response(b"ok")

    async def start(self) -> HookSink:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", ws="none", access_log=False,
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await eventually(lambda: self._server is not None and self._server.started, 5, "receiver")
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._sock is not None:
            self._sock.close()


class SlowRecorder(Recorder):
    """The aiosmtpd recorder, taking ``delay`` s per DATA (so a kill can land mid-delivery)."""

    delay: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


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
