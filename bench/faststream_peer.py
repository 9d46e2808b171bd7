"""The FastStream peer of ``bench.consume``: a Redis Streams consumer group, no-op handler.

Runs as a script in its own virtualenv (``python -P bench/faststream_peer.py ...``), made
by ``bench.consume`` on first use with :data:`REQUIREMENTS`; it imports nothing of ours.

It copies the first ``--events`` event JSON bodies of our events stream (``--source``)
into its own stream with FastStream's publisher (pipelined, FastStream's binary envelope,
the body as JSON), creates the group at the start of that stream, then times a FastStream
subscriber from ``broker.start()`` until every message was validated into :data:`AnyEvent`
by FastStream, handled by a no-op handler and acked (the group's pending list empty). It
prints one JSON object: ``{"events": N, "seconds": S, "per_s": R}``.

The subscriber runs as FastStream's CLI runs it (uvloop), one message per handler call,
acked after the handler (``AckPolicy.ACK``), reading 100 entries per XREADGROUP like the
raw baseline and our runtime. Per-message logging is off (``log_level=DEBUG``), as ours
logs nothing per delivery; ``--log`` keeps FastStream's default INFO lines per message.
``--batch`` hands the handler a list of up to 100 events and acks them with one XACK.

:func:`ensure_venv` and :func:`measure` are the orchestrator's side (our virtualenv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: What the peer's virtualenv is made with (FastStream's current minor series: 0.x minors
#: break); hiredis and uvloop as on our side.
REQUIREMENTS = ["faststream[redis]>=0.7,<0.8", "hiredis", "uvloop"]
#: The field of our stream entries that holds the event JSON (``bookgen_events.events``).
WIRE_FIELD = b"event"
HERE = Path(__file__).resolve()


# -- the orchestrator's side (runs in our virtualenv) --------------------------------------


def ensure_venv(venv: Path) -> Path:
    """The peer virtualenv's python, creating the virtualenv with :data:`REQUIREMENTS` first."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the FastStream peer virtualenv {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *REQUIREMENTS], check=True)
    return python


async def measure(
    python: Path, redis_url: str, source: str, stream: str, n: int, *, batch: bool = False
) -> float:
    """Run the peer on ``n`` bodies of ``source``; FastStream's messages/s."""
    # -P: this file runs as a script in a virtualenv without our packages; keep bench/ off
    # sys.path, where bench/email.py would shadow the stdlib's email.
    argv = [str(python), "-P", str(HERE), "--source", source, "--stream", stream]
    argv += ["--events", str(n), *(["--batch"] if batch else [])]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "REDIS_URL": redis_url},  # not on argv: it may hold a password
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"the FastStream peer failed (exit {proc.returncode}): {tail}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["per_s"])


# -- a pydantic model of our event shape (bookgen_events.events), the same constraints ------

_LINE = r"^[^\r\n\x00]*$"
_EMAIL = (
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
_T = r"[^\s\x00-\x1f\x7f"
_URL = (
    rf"^(?i:https?)://(?:{_T}/?#@]*@)?(?:\[{_T}/?#@\[\]]+\]|{_T}/?#@\[\]:]+)(?::[0-9]*)?"
    rf"(?:[/?#]{_T}]*)?$"
)
_TRACE = r"^[\x20-\x7e]*$"
_PHONE = r"^\+[1-9][0-9]{7,14}$"
Line = Annotated[str, StringConstraints(pattern=_LINE)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ProgressData(_Data):
    progress: float = Field(ge=0, le=100, allow_inf_nan=False)
    phase: Line | None = None
    message: str | None = None


class CompletionData(_Data):
    biography_id: int | Line | None = None
    character_name: Line | None = None
    status: Line = "completed"


class ErrorData(_Data):
    error: str = Field(min_length=1)
    severity: Literal["info", "warning", "error", "critical"] = "error"


class StatusChangeData(_Data):
    old_status: Line | None = None
    new_status: Line


class AdminData(_Data):
    alert_type: Annotated[Line, Field(min_length=1)]
    message: str


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    occurred_at: datetime
    job_id: Id | None = None
    user_id: Id | None = None
    webhook_url: Annotated[str, StringConstraints(max_length=2048, pattern=_URL)] | None = None
    emails: list[Annotated[str, StringConstraints(max_length=254, pattern=_EMAIL)]] = []
    # The envelope's later fields (SPEC 10, 11; tracing): without them every message of ours
    # failed the peer's validation and the peer waited forever for its count.
    phones: Annotated[
        list[Annotated[str, StringConstraints(pattern=_PHONE)]], Field(max_length=20)
    ] = []
    deliver_at: datetime | None = None
    trace: (
        dict[
            Literal["traceparent", "tracestate"],
            Annotated[str, Field(max_length=512, pattern=_TRACE)],
        ]
        | None
    ) = None


class ProgressEvent(_Event):
    type: Literal["progress_update"]
    data: ProgressData


class CompletionEvent(_Event):
    type: Literal["completion"]
    data: CompletionData


class ErrorEvent(_Event):
    type: Literal["error_alert"]
    data: ErrorData


class StatusChangeEvent(_Event):
    type: Literal["status_change"]
    data: StatusChangeData


class AdminEvent(_Event):
    type: Literal["admin_alert"]
    data: AdminData


#: One event of any type, chosen by ``type`` (as ``bookgen_events.events.decode`` does).
AnyEvent = Annotated[
    ProgressEvent | CompletionEvent | ErrorEvent | StatusChangeEvent | AdminEvent,
    Field(discriminator="type"),
]


# -- the peer's run (in its own virtualenv) ---------------------------------------------------


async def run(
    redis_url: str, source: str, stream: str, n: int, *, batch: bool, log: bool
) -> dict[str, Any]:
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    entries = await redis.xrange(source, count=n)
    if len(entries) < n:
        raise SystemExit(f"{source} holds {len(entries)} entries, fewer than {n}")
    broker = RedisBroker(redis_url, log_level=logging.INFO if log else logging.DEBUG)
    handled = 0
    done = asyncio.Event()

    sub = broker.subscriber(
        stream=StreamSub(stream, group="faststream", consumer="c", max_records=100, batch=batch),
        ack_policy=AckPolicy.ACK,
    )

    if batch:

        @sub
        async def handle_batch(events: list[AnyEvent]) -> None:
            nonlocal handled
            handled += len(events)
            if handled == n:
                done.set()

    else:

        @sub
        async def handle(event: AnyEvent) -> None:
            nonlocal handled
            handled += 1
            if handled == n:
                done.set()

    client = await broker.connect()
    for i in range(0, n, 1000):  # FastStream's own publisher, 1,000 XADDs per round trip
        pipe = client.pipeline(transaction=False)
        for _, fields in entries[i : i + 1000]:
            await broker.publish(json.loads(fields[WIRE_FIELD]), stream=stream, pipeline=pipe)
        await pipe.execute()
    # The group starts at the beginning (as the raw baseline's does); FastStream's own
    # declaration starts a new group at "$" and would skip the entries just added.
    await redis.xgroup_create(stream, "faststream", id="0")

    started = time.perf_counter()
    await broker.start()
    try:  # a message failing validation is never counted: fail, never wait forever
        await asyncio.wait_for(done.wait(), timeout=max(60.0, n / 100))
    except TimeoutError:
        raise SystemExit(
            f"handled {handled} of {n} in time (messages failing validation?)"
        ) from None
    while (await redis.xpending(stream, "faststream"))["pending"]:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    seconds = time.perf_counter() - started
    # Let the subscriber's last read (XREADGROUP BLOCK 100 ms on the drained stream) return
    # before the connection closes under it, which FastStream logs as a fetch error.
    await sub.stop()
    await asyncio.sleep(0.2)
    await broker.stop()
    group = (await redis.xinfo_groups(stream))[0]
    await redis.aclose()
    if handled != n or group["entries-read"] != n:
        raise SystemExit(f"handled {handled}, group read {group['entries-read']} of {n}")
    return {"events": n, "seconds": seconds, "per_s": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--source", required=True, help="our events stream to copy bodies from")
    parser.add_argument("--stream", required=True, help="FastStream's stream (made here)")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch", action="store_true", help="a handler per batch of 100")
    parser.add_argument("--log", action="store_true", help="FastStream's per-message INFO logs")
    args = parser.parse_args()
    coro = run(
        args.redis_url, args.source, args.stream, args.events, batch=args.batch, log=args.log
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
