"""The README's first command, `bookgen-events up`, used as a newcomer would: no REDIS_URL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import websockets
from standardwebhooks.webhooks import Webhook

from bookgen_events import Settings
from bookgen_events.app.runner import embedded_if_needed, run_workers
from bookgen_events.credentials import ensure_credentials
from bookgen_events.errors import GatewayBindError

from ..support.ports import free_port
from ..support.processes import CLI, process_env
from ..support.waits import eventually, wait_answer
from ..support.webhooks import SECRET, Receiver

SECRETS = {
    "WEBHOOK_SECRET": SECRET,
    "SMTP_PASSWORD": "smtp-pass-6c1f0e",
    "PRODUCER_API_KEY": "producer-key-93ab51",
}


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


async def test_up_runs_everything_on_an_embedded_server(tmp_path: Path, receiver: Receiver) -> None:
    """`up` starts the embedded Redis, the gateway and consumers; an event reaches every channel.

    With no WEBSOCKET_JWT_SECRET or ADMIN_API_KEY set, `up` makes them (owner-only files in
    the data directory), says where they are, and WebSocket auth stays on: a client needs a
    token, which `bookgen-events token` mints from the same folder with nothing set.
    """
    port = free_port()
    env = process_env(
        **SECRETS,
        EMBEDDED_DATA_DIR=str(tmp_path / ".bookgen"),
        WEBHOOK_ALLOW_PRIVATE="true",
        LOG_LEVEL="DEBUG",
    )
    argv = CLI
    log_file = (tmp_path / "up.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        *argv, "up", "--port", str(port), cwd=tmp_path, env=env, stdout=log_file, stderr=log_file
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = await wait_answer(f"{base}/health")
        assert health.status_code == 200, health.text
        status = (await wait_answer(f"{base}/ws/status")).json()
        assert status == {
            "status": "operational",
            "connections": {
                "total_users": 0, "total_user_connections": 0,
                "total_jobs": 0, "total_job_connections": 0,
            },
        }  # fmt: skip
        page = await wait_answer(f"{base}/")
        assert page.status_code == 200 and "<html" in page.text.lower()

        ws_url = f"ws://127.0.0.1:{port}/ws/notifications?job_id=123"
        async with websockets.connect(ws_url) as refused:  # auth is on: no token, no events
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        minted = await _run(argv, tmp_path, env, "token", "--job-id", "123")
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()

        async with websockets.connect(f"{ws_url}&token={token}") as ws:
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
            try:
                with sqlite3.connect(db) as conn:
                    return conn.execute(
                        "SELECT delivery_method, status FROM notifications "
                        "WHERE related_entity_type = 'job' AND related_entity_id = 123"
                    ).fetchall()
            except sqlite3.OperationalError:  # the file is there, the logger's schema not yet
                return []

        # Both rows, each from its own stream (the event's, the outcome's), read apart.
        both = {("webhook", "delivered"), ("websocket", "delivered")}
        await eventually(lambda: both <= set(logged()), within=40, what="the log")
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
        # From another folder and shell, the printed export line reaches the same server.
        export = next(line for line in (tmp_path / "up.log").read_text().splitlines()
                      if line.strip().startswith("export REDIS_URL="))  # fmt: skip
        elsewhere = {k: v for k, v in env.items() if k != "EMBEDDED_DATA_DIR"}
        status = await _run(
            ["bash", "-c", f'{export.strip()} && "$@"', "sh", *argv], tmp_path.parent,
            elsewhere, "status", "--json",
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["events"]["length"] >= 6
        metrics = (await wait_answer(f"{base}/metrics")).text
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
    data = (tmp_path / ".bookgen").resolve()
    made = {name: data / name.lower() for name in ("WEBSOCKET_JWT_SECRET", "ADMIN_API_KEY")}
    # Where to read what it made, never the values; what the environment set is not kept.
    for name, path in made.items():
        assert re.search(rf"{name}\s+{re.escape(str(path))}", log), f"no path for {name}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert not (data / "producer_api_key").exists() and not (data / "webhook_secret").exists()
    assert f'export REDIS_URL="redis://:$(cat {data / "redis_password"})@127.0.0.1:' in log
    assert "WebSocket auth is OFF" not in log and "WEBSOCKET_AUTH=none" not in log
    kept = {name: path.read_text().strip() for name, path in made.items()}
    kept["redis password"] = (data / "redis_password").read_text().strip()
    for name, secret in {**SECRETS, **kept}.items():
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


async def test_sigterm_while_starting_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGTERM while the embedded server is still starting ends `up` at once, and the server
    goes with it (not left running until the next start reaps it)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "up", "--port", str(free_port()), cwd=tmp_path,
        env=process_env(EMBEDDED_DATA_DIR=str(tmp_path / ".bookgen")),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    up = psutil.Process(proc.pid)

    def server() -> list[psutil.Process]:
        try:
            return [c for c in up.children() if c.name().startswith("valkey")]
        except psutil.Error:
            return []

    try:
        (child,) = await eventually(server, within=30, what="the embedded server", step=0.002)
        proc.send_signal(signal.SIGTERM)  # it has not answered a PING yet, or only just
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert code == 0 and "Traceback" not in err, err[-2000:]
    gone = not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert gone, "the embedded server outlived `up`"
    assert not (tmp_path / ".bookgen" / "embedded.json").exists()


async def test_a_gateway_that_cannot_listen_stops_every_worker_and_the_server(
    settings: Settings, tmp_path: Path
) -> None:
    """When the gateway's own bind fails (the port taken after `up` checked it), the other
    workers stop, run_workers raises GatewayBindError, and the embedded server is stopped."""
    local = ensure_credentials(
        settings.model_copy(update={"redis_url": None, "embedded_data_dir": str(tmp_path / "d")})
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        workers = {"webhook": {}, "logger": {}, "gateway": {"host": "127.0.0.1", "port": port}}
        with pytest.raises(GatewayBindError, match=f"127.0.0.1:{port}"):
            with embedded_if_needed(local) as (running, server):
                assert server is not None and server._process is not None
                pid = server._process.pid
                await asyncio.wait_for(run_workers(running, workers, asyncio.Event()), 30)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not others, others
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
