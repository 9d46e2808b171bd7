"""The README's first command, `bookgen-events up`, used as a newcomer would: no REDIS_URL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets
from standardwebhooks.webhooks import Webhook

from ..consumers.webhook_receiver import SECRET, eventually, receiver  # noqa: F401 - fixture
from ..helpers import free_port

SECRETS = {
    "WEBHOOK_SECRET": SECRET,
    "SMTP_PASSWORD": "smtp-pass-6c1f0e",
    "PRODUCER_API_KEY": "producer-key-93ab51",
}


async def _wait_http(url: str, within: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=2)
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _run(
    argv: list[str], cwd: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_up_runs_everything_on_an_embedded_server(tmp_path: Path, receiver) -> None:  # noqa: F811
    """`up` starts the embedded Redis, the gateway and consumers; an event reaches every channel."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "BOOKGEN"))}
    env.update(
        SECRETS,
        EMBEDDED_DATA_DIR=str(tmp_path / ".bookgen"),
        WEBHOOK_ALLOW_PRIVATE="true",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    exe = shutil.which("bookgen-events")
    argv = [exe] if exe else [sys.executable, "-m", "bookgen_events.cli"]
    log_file = (tmp_path / "up.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        *argv, "up", "--port", str(port), cwd=tmp_path, env=env, stdout=log_file, stderr=log_file
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = await _wait_http(f"{base}/health")
        assert health.status_code == 200, health.text
        status = (await _wait_http(f"{base}/ws/status")).json()
        assert status == {
            "status": "operational",
            "connections": {
                "total_users": 0, "total_user_connections": 0,
                "total_jobs": 0, "total_job_connections": 0,
            },
        }  # fmt: skip
        page = await _wait_http(f"{base}/")
        assert page.status_code == 200 and "<html" in page.text.lower()

        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/notifications?job_id=123") as ws:
            event = {
                "type": "completion",
                "job_id": "123",
                "data": {"biography_id": 456, "character_name": "Marie Curie"},
                "webhook_url": receiver.url("up"),
            }
            async with httpx.AsyncClient() as client:
                created = await client.post(
                    f"{base}/events",
                    json=event,
                    headers={"Authorization": f"Bearer {SECRETS['PRODUCER_API_KEY']}"},
                )
            assert created.status_code == 201, created.text
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        assert message["type"] == "completion" and message["character_name"] == "Marie Curie"
        assert message["id"] == created.json()["stream_id"]

        await eventually(lambda: receiver.at("up"), within=40, what="the webhook")
        (hook,) = receiver.at("up")
        Webhook(SECRET).verify(hook.body, hook.headers)
        assert json.loads(hook.body)["event"] == "job.completed"

        db = tmp_path / "bookgen.db"

        def logged() -> list[tuple[str, str]]:
            if not db.exists():
                return []
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT delivery_method, status FROM notifications "
                    "WHERE related_entity_type = 'job' AND related_entity_id = 123"
                ).fetchall()

        await eventually(lambda: ("webhook", "delivered") in logged(), within=40, what="the log")
        assert ("websocket", "delivered") in logged()
        state = json.loads((tmp_path / ".bookgen" / "embedded.json").read_text())

        # Other commands find the embedded server through its state file (no REDIS_URL).
        demo = await _run(
            argv, tmp_path, env, "demo", "--job-id", "777", "--steps", "2", "--interval", "0",
            "--webhook-url", receiver.url("demo"), "--wait", "40",
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        summary = json.loads(demo.stdout.splitlines()[-1])
        assert summary["emitted"] == 5 and summary["outcomes"].get("webhook:delivered") == 5
        verify = await _run(argv, tmp_path, env, "verify", "--webhook-url", receiver.url("verify"))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "[  ok] redis" in verify.stdout and "[  ok] webhook" in verify.stdout
        metrics = (await _wait_http(f"{base}/metrics")).text
        for series in (
            'bookgen_deliveries_total{channel="webhook",status="delivered"}',
            "bookgen_group_lag",
            "bookgen_events_appended",
            "bookgen_delivery_latency_seconds_bucket",
        ):
            assert series in metrics, series
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
            log_file.close()
    log = (tmp_path / "up.log").read_text()
    assert code == 0, log[-3000:]
    assert "embedded" in log and "WEBSOCKET_JWT_SECRET is not set" in log
    for name, secret in SECRETS.items():
        assert secret.removeprefix("whsec_") not in log, f"{name} leaked into the logs"
    assert "Marie Curie" not in log, "event contents leaked into the logs"
    # The embedded server was stopped with its owner.

    def server_gone() -> bool:
        try:
            os.kill(state["pid"], 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(server_gone, within=10, what="the embedded server to stop with `up`")
