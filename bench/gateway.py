"""Gateway benchmark: ``bookgen-events gateway`` vs a minimal broadcaster (Redis pub/sub) gateway.

N WebSocket clients on loopback all watch one job; events are emitted at 50/s (50,000
deliveries/s with 1,000 clients), then at a saturating rate. Reported per gateway: delivered
messages/s, emit->client latency p50/p99, gateway CPU per delivery, memory per idle
connection, and ratios ours/peer.

    python -m bench.gateway                                  # 1,000 clients, 10 s phases
    python -m bench.gateway --clients 200 --duration 4       # a short run

The peer runs in its own virtualenv (broadcaster 0.3.1 delivers nothing with redis-py 8):
``bookgen-bench-broadcaster`` in the temp folder, created on first use with ``broadcaster==0.3.1 'redis<8' starlette uvicorn
websockets`` (``--peer-venv`` to move it). Both gateways run uvicorn's sans-I/O websockets
protocol on the stdlib asyncio loop. Clients are a separate process of raw asyncio
protocols that never offer permessage-deflate (so neither side compresses) and parse frames
minimally, so the client side costs far less than either gateway; every 20th client
records per-message arrival times for latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
JOB = "bench-job"
PROBE_EVERY = 20
PAD = "p" * 120  # messages of ~330 bytes for both gateways


# -- client load process (run with any python) ---------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.samples: list[tuple[int, float]] = []
        self.closed = 0


class _Client(asyncio.Protocol):
    """A minimal RFC 6455 client: handshake without extensions, count text frames, answer pings."""

    def __init__(
        self, host: str, path: str, stats: _Stats, probe: bool, ready: asyncio.Future
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.stats, self.probe, self.ready = stats, probe, ready
        self.buf = b""
        self.open = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buf[:200].decode(errors="replace")))
                return
            self.open = True
            self.ready.set_result(None)
            buf = buf[end + 4 :]
        pos, size, count = 0, len(buf), 0
        now = time.time()
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                count += 1
                if self.probe:
                    at = buf.find(b'"phase":"s', pos + head, end)
                    if at >= 0:
                        stop = buf.find(b'"', at + 10, end)
                        self.stats.samples.append((int(buf[at + 10 : stop]), now))
            elif opcode == 9:  # pong with a zero mask: payload unchanged
                payload = buf[pos + head : end]
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.transport.close()
            pos = end
        self.buf = buf[pos:]
        if count:
            second = int(now)
            self.stats.buckets[second] = self.stats.buckets.get(second, 0) + count


async def run_clients(url: str, clients: int) -> None:
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    loop = asyncio.get_running_loop()
    stats = _Stats()
    for start in range(0, clients, 100):
        readies = []
        for i in range(start, min(start + 100, clients)):
            ready = loop.create_future()
            await loop.create_connection(
                lambda i=i, ready=ready: _Client(
                    host_port, "/" + path, stats, i % PROBE_EVERY == 0, ready
                ),
                host,
                int(port),
            )
            readies.append(ready)
        await asyncio.gather(*readies)
    print(json.dumps({"ready": clients}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the orchestrator says "report"
    print(
        json.dumps({"buckets": stats.buckets, "samples": stats.samples, "closed": stats.closed}),
        flush=True,
    )


# -- the peer: a minimal encode/broadcaster gateway (runs in the peer venv) -----------------


def run_peer(port: int, redis_url: str) -> None:
    import contextlib

    import uvicorn
    from broadcaster import Broadcast
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    broadcast = Broadcast(redis_url)

    async def notifications(websocket: Any) -> None:
        await websocket.accept()
        async with broadcast.subscribe(channel=f"job:{websocket.query_params['job_id']}") as sub:
            async for event in sub:
                await websocket.send_text(event.message)

    async def health(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with broadcast:
            yield

    app = Starlette(
        routes=[WebSocketRoute("/ws/notifications", notifications), Route("/health", health)],
        lifespan=lifespan,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="asyncio",
        ws="websockets-sansio",
    )


# -- orchestrator ----------------------------------------------------------------------------


def ensure_peer_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the peer virtualenv {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "-q",
                "broadcaster==0.3.1",
                "redis<8",
                "starlette",
                "uvicorn",
                "websockets",
            ],
            check=True,
        )
    return python


def message(seq: int) -> dict[str, Any]:
    return {"progress": float(seq % 100), "phase": f"s{seq}", "message": PAD}


class Target:
    """One gateway under test: how to start it and how to emit to it."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.cmd, self.env, self.port = name, cmd, env, port
        self.url = f"ws://127.0.0.1:{port}/ws/notifications?job_id={JOB}"

    async def emit(self, redis: Any, seqs: range) -> None:
        raise NotImplementedError


class Ours(Target):
    def __init__(self, port: int, redis_url: str, prefix: str) -> None:
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": prefix,
            "WEBSOCKET_AUTH": "none",
            # Every bench client connects from 127.0.0.1: lift the per-address cap.
            "WEBSOCKET_MAX_CONNECTIONS_PER_USER": "1000000",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
        cli = str(Path(sys.executable).with_name("bookgen-events"))
        super().__init__("bookgen-events", [cli, "gateway", "--port", str(port)], env, port)
        self.prefix = prefix

    async def emit(self, redis: Any, seqs: range) -> None:
        from bookgen_events import EventBus

        bus = EventBus(redis, prefix=self.prefix, maxlen=100_000)
        await bus.emit_many(
            {"type": "progress_update", "job_id": JOB, "data": message(s)} for s in seqs
        )


class Peer(Target):
    def __init__(self, port: int, redis_url: str, python: Path) -> None:
        # -P: the peer's venv lacks our packages, so this file runs as a script; keep its
        # folder off sys.path, where bench/email.py would shadow the stdlib's email.
        cmd = [str(python), "-P", str(HERE), "peer-server", "--port", str(port)]
        cmd += ["--redis-url", redis_url]
        super().__init__("broadcaster", cmd, dict(os.environ), port)

    async def emit(self, redis: Any, seqs: range) -> None:
        from bookgen_events import Event

        pipe = redis.pipeline(transaction=False)
        for s in seqs:  # the same flattened JSON our gateway sends, encoded once by the producer
            event = Event(type="progress_update", job_id=JOB, data=message(s))
            pipe.publish(
                f"job:{JOB}", json.dumps({"id": str(s), **event.flat()}, separators=(",", ":"))
            )
        await pipe.execute()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(port: int, deadline_s: float = 20) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < end:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"gateway on {port} never became healthy")


async def _emit_at(
    target: Target, redis: Any, rate: float, duration: float, first: int, emitted: dict[int, float]
) -> int:
    """Emit ``rate`` events/s for ``duration`` s in 10 ms ticks; returns the next seq."""
    tick = 0.01 if rate >= 100 else 1 / rate
    per_tick = rate * tick
    start = time.time()
    seq, owed = first, 0.0
    while (now := time.time()) < start + duration:
        owed += per_tick
        n = int(owed)
        owed -= n
        if n:
            for s in range(seq, seq + n):
                emitted[s] = now
            await target.emit(redis, range(seq, seq + n))
            seq += n
        await asyncio.sleep(max(0.0, start + (seq - first) / rate - time.time()))
    return seq


async def bench_target(target: Target, args: argparse.Namespace, redis: Any) -> dict[str, Any]:
    import psutil

    log = tempfile.TemporaryFile()
    server = await asyncio.create_subprocess_exec(*target.cmd, env=target.env, stderr=log)
    try:
        try:
            await _wait_http(target.port)
        except TimeoutError:
            log.seek(0)
            sys.stderr.write(log.read()[-3000:].decode(errors="replace"))
            raise
        gw = psutil.Process(server.pid)
        await asyncio.sleep(0.5)
        rss0 = gw.memory_info().rss
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.gateway",
            "clients",
            "--url",
            target.url,
            "--clients",
            str(args.clients),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 30,
            cwd=HERE.parent.parent,
        )
        assert load.stdout and load.stdin
        json.loads(await asyncio.wait_for(load.stdout.readline(), 120))
        loader = psutil.Process(load.pid)
        await asyncio.sleep(1.5)
        rss1 = gw.memory_info().rss
        result: dict[str, Any] = {"mem_per_idle_conn_kb": (rss1 - rss0) / args.clients / 1024}
        emitted: dict[int, float] = {}
        windows: dict[str, tuple[float, float, range, float]] = {}
        seq = 0
        for phase, rate in (("steady", args.rate), ("saturate", args.saturate_rate)):
            warm = min(1.0, args.duration / 4)
            seq = await _emit_at(target, redis, rate, warm, seq, emitted)
            t0, cpu0, first = time.time(), sum(gw.cpu_times()[:2]), seq
            load0 = sum(loader.cpu_times()[:2])
            seq = await _emit_at(target, redis, rate, args.duration, seq, emitted)
            t1, cpu1 = time.time(), sum(gw.cpu_times()[:2])
            load_cpu = (sum(loader.cpu_times()[:2]) - load0) / (t1 - t0)
            windows[phase] = (t0, t1, range(first, seq), cpu1 - cpu0, load_cpu)
            await asyncio.sleep(args.drain)  # let a saturated gateway finish before the next phase
        load.stdin.write(b"report\n")
        await load.stdin.drain()
        t_report = time.time()
        report = json.loads(await asyncio.wait_for(load.stdout.readline(), 60))
        await load.wait()
        buckets = {int(k): v for k, v in report["buckets"].items()}
        for phase, (t0, t1, seqs, cpu, load_cpu) in windows.items():
            # Whole seconds inside the window, so partial buckets do not skew the rate.
            secs = range(int(t0) + 1, int(t1))
            delivered = sum(buckets.get(s, 0) for s in secs)
            lat = [t - emitted[s] for s, t in report["samples"] if s in seqs]
            # A probe message never received by the report counts as (report - emit): the
            # percentiles are then lower bounds, flagged below.
            probes = (args.clients + PROBE_EVERY - 1) // PROBE_EVERY
            got = {}
            for s_, _ in report["samples"]:
                got[s_] = got.get(s_, 0) + 1
            missing = [
                (t_report - emitted[s_]) for s_ in seqs for _ in range(probes - got.get(s_, 0))
            ]
            lat = sorted(lat + missing)
            rate = delivered / max(1, len(secs))
            result[phase] = {
                "offered_per_s": len(seqs) * args.clients / (t1 - t0),
                "delivered_per_s": rate,
                "p50_ms": 1000 * statistics.median(lat) if lat else None,
                "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1] if lat else None,
                "undelivered_probe_msgs": len(missing),
                "cpu_us_per_delivery": 1e6 * cpu / (rate * (t1 - t0)) if rate else None,
                "gateway_cores": cpu / (t1 - t0),
                "client_load_cores": load_cpu,
            }
        result["clients_closed"] = report["closed"]
        return result
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died on its own
            server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 15)
        except TimeoutError:
            server.kill()
            await server.wait()
        log.close()


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a and b else "-"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    ours, peer = results.get("bookgen-events"), results.get("broadcaster")
    rows = [("mem/idle conn (KB)", "mem_per_idle_conn_kb", None)]
    for phase in ("steady", "saturate"):
        for label, key in (
            ("offered/s", "offered_per_s"),
            ("delivered/s", "delivered_per_s"),
            ("p50 ms", "p50_ms"),
            ("p99 ms", "p99_ms"),
            ("undelivered at end (probes)", "undelivered_probe_msgs"),
            ("CPU us/delivery", "cpu_us_per_delivery"),
            ("gateway cores", "gateway_cores"),
            ("client-load cores", "client_load_cores"),
        ):
            rows.append((f"{phase} {label}", key, phase))
    print(f"{'metric':34} {'bookgen-events':>15} {'broadcaster':>15} {'ours/peer':>10}")
    for label, key, phase in rows:
        vals = [(r[phase][key] if phase else r[key]) if r else None for r in (ours, peer)]
        cells = [f"{v:15.1f}" if isinstance(v, (int, float)) else f"{'-':>15}" for v in vals]
        print(f"{label:34} {cells[0]} {cells[1]} {_ratio(*vals):>10}")
    print("(latency of messages still undelivered at the end counts as end - emit: a lower bound)")
    for name, r in results.items():
        print(f"{name}: clients closed by the server during the run: {r['clients_closed']}")
    if ours and peer:
        p99 = ours["steady"]["p99_ms"] / peer["steady"]["p99_ms"]
        sat = ours["saturate"]["delivered_per_s"] / peer["saturate"]["delivered_per_s"]
        mem = ours["mem_per_idle_conn_kb"]
        print(
            f"goal p99 <= 0.5x peer at the steady rate: {p99:.3g}x {'PASS' if p99 <= 0.5 else 'FAIL'}"
        )
        print(f"goal saturation >= 1.5x peer: {sat:.3g}x {'PASS' if sat >= 1.5 else 'FAIL'}")
        print(f"goal <= 30 KB per idle connection: {mem:.1f} KB {'PASS' if mem <= 30 else 'FAIL'}")


async def orchestrate(args: argparse.Namespace) -> None:
    from redis.asyncio import Redis

    sys.path.insert(0, str(HERE.parent.parent))
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    targets: list[Target] = []
    if args.only in (None, "ours"):
        targets.append(Ours(args.port or _free_port(), args.redis_url, prefix))
    if args.only in (None, "peer"):
        targets.append(Peer(_free_port(), args.redis_url, ensure_peer_venv(Path(args.peer_venv))))
    results = {}
    try:
        for target in targets:
            print(
                f"== {target.name}: {args.clients} clients, {args.rate}/s then {args.saturate_rate}/s, "
                f"{args.duration}s each",
                file=sys.stderr,
            )
            results[target.name] = await bench_target(target, args, redis)
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    print(json.dumps(results, indent=1), file=sys.stderr)
    print_table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role")
    p = sub.add_parser("clients")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p = sub.add_parser("peer-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s in the steady phase")
    parser.add_argument(
        "--saturate-rate", type=float, default=2000.0, help="events/s offered to saturate"
    )
    parser.add_argument("--drain", type=float, default=3.0, help="seconds between phases")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--port", type=int, default=0, help="our gateway's port (default: free)")
    parser.add_argument("--only", choices=["ours", "peer"])
    parser.add_argument(
        "--peer-venv", default=str(Path(tempfile.gettempdir()) / "bookgen-bench-broadcaster")
    )
    args = parser.parse_args()
    if args.role == "clients":
        try:  # the load generator should cost as little as possible; the gateways do not get it
            import uvloop

            uvloop.run(run_clients(args.url, args.clients))
        except ImportError:
            asyncio.run(run_clients(args.url, args.clients))
    elif args.role == "peer-server":
        run_peer(args.port, args.redis_url)
    else:
        asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
