"""``/ws/notifications``: validate, authenticate, subscribe, resume, then stay live.

Requests are checked before the handshake (no await: validation and JWT only); refusals
accept and then close with 1008 and a reason, since closing before accepting makes the
server answer HTTP 403, which a browser cannot tell from any other failure.

Resume (Centrifugo's offset recovery): the connection is indexed *first*, so every entry
after the fan-out's position reaches its queue, held while ``buffering``; then the entries
in ``(last_event_id, position]`` are backfilled with XRANGE; then the queue is released.
Both sides are split at the same position, read in the same loop tick as the indexing, so
there is no gap and no duplicate.

With ``STREAM_PARTITIONS`` > 1 the id and the position hold one stream id per partition
(:mod:`gateway.cursor`) and each partition is split at its own: a job subscription reads
back only its job's partition, a user subscription every partition (a user's events with
job ids live in their jobs' partitions). The backfill is sent in stream-id (time) order
across partitions, each message with an id that is exact at that point.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket, WebSocketState

from bookgen_events.bus import EventBus
from bookgen_events.errors import DecodeError
from bookgen_events.events import Event, decode
from bookgen_events.logs import get_logger
from bookgen_events.partitions import partition_of_key
from bookgen_events.settings import Settings

from .admission import ConnectionCaps, check_origin
from .auth import Grant, Refused, authorize, verify_token
from .cursor import CURSOR, format_cursor, parse_cursor
from .fanout import Fanout
from .metrics import WS_CLOSED, WS_CONNECTIONS
from .protocol import EXTENSION
from .subscriber import Message, StreamId, Subscriber, matches, parse_stream_id

log = get_logger("gateway.websocket")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BACKFILL_PAGE = 500
RESYNC = Message.of("", {"type": "resync_required"})
_background: set[asyncio.Task[None]] = set()  # plain-ASGI closes in flight


@dataclass(frozen=True, slots=True)
class WatchRequest:
    job_id: str | None
    user_id: str | None
    last_event_id: str | None
    token: str | None


def _one(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise Refused(f"{name} given more than once")
    return values[0] if values and values[0] != "" else None


def _routing_key(params: QueryParams, name: str) -> str | None:
    value = _one(params, name)
    if value is not None and (len(value) > 200 or _CONTROL.search(value)):
        raise Refused(f"{name} must be 1-200 printable characters")
    return value


def parse_request(websocket: WebSocket) -> WatchRequest:
    """The query parameters, validated; raises :class:`Refused` with a reason to show."""
    params = websocket.query_params
    job_id = _routing_key(params, "job_id")
    user_id = _routing_key(params, "user_id")
    if job_id is None and user_id is None:
        raise Refused("give job_id and/or user_id")
    last = _one(params, "last_event_id")
    if last is not None and not CURSOR.fullmatch(last):
        raise Refused(
            "last_event_id must be a stream id such as 1700000000000-0, or a message's id"
        )
    token = _one(params, "token")
    header = websocket.headers.get("authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip() or None
    return WatchRequest(job_id, user_id, last, token)


def check_access(request: WatchRequest, settings: Settings) -> Grant | None:
    """The token's grant (None with auth off); raises :class:`Refused` if it does not cover
    the request."""
    if settings.websocket_auth == "none":
        return None
    secret = settings.websocket_jwt_secret
    if secret is None:  # create_app refuses this configuration; a second fence
        raise Refused("server has no WEBSOCKET_JWT_SECRET")
    grant = verify_token(
        secret.get_secret_value(), request.token, max_ttl_s=settings.websocket_token_max_ttl
    )
    authorize(grant, job_id=request.job_id, user_id=request.user_id)
    return grant


def _expire_at(grant: Grant | None, sub: Subscriber) -> asyncio.TimerHandle | None:
    """Close ``sub`` with 1008 when its token expires: a connection never outlives it."""
    if grant is None:
        return None
    loop = asyncio.get_running_loop()
    delay = max(0.0, grant.expires_at - time.time())
    return loop.call_later(delay, sub.shut, 1008, "token expired")


def _closer(websocket: WebSocket, sink: Any | None) -> Any:
    def close(sub: Subscriber, code: int, reason: str) -> None:
        WS_CLOSED.labels(str(code)).inc()
        if sink is not None:
            sink.force_close(code, reason)
            return

        # Plain ASGI: a close waits for a writable socket, so never block the fan-out on it.
        async def close_later() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code, reason), 5.0)

        task = asyncio.get_running_loop().create_task(close_later())
        _background.add(task)
        task.add_done_callback(_background.discard)

    return close


async def notifications(websocket: WebSocket) -> None:
    """The WebSocket endpoint; see the module docstring for the protocol."""
    state = websocket.app.state
    settings: Settings = state.settings
    fanout: Fanout = state.fanout
    caps: ConnectionCaps = state.connection_caps
    try:
        headers = websocket.headers
        check_origin(headers.get("origin"), headers.get("host"), settings.websocket_allowed_origins)
        request = parse_request(websocket)
        grant = check_access(request, settings)
        counted = caps.keys(request.token, websocket.client.host if websocket.client else None)
        caps.admit(counted)
    except Refused as refused:
        WS_CLOSED.labels("1008").inc()
        log.info("websocket refused", reason=refused.reason)
        await websocket.accept()
        await websocket.close(1008, refused.reason[:120])
        return

    sink = websocket.scope.get("extensions", {}).get(EXTENSION, {}).get("sink")
    sub = Subscriber(
        jobs=[request.job_id] if request.job_id else [],
        users=[request.user_id] if request.user_id else [],
        maxsize=settings.websocket_queue_size,
        sink=sink,
        send_text=websocket.send_text,
        closer=_closer(websocket, sink),
        buffering=True,
    )
    # Indexed before the handshake completes, so a client whose connect() has returned is
    # already subscribed: events in between are held in its queue, not lost.
    position = fanout.subscribe(sub)
    WS_CONNECTIONS.inc()
    expiry = _expire_at(grant, sub)
    try:
        await websocket.accept()
        if request.last_event_id is None:
            sub.go_live([parse_stream_id(end) for end in position.split(".")])
        else:
            await resume(
                sub, request.last_event_id, position, fanout.bus, settings.websocket_resume_max,
                muted=fanout.muted, reader_at=fanout.positions.__getitem__,
            )  # fmt: skip
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except Exception as exc:  # a send to a vanished client; nothing to tell it
        log.debug("websocket ended", error=repr(exc))
    finally:
        if expiry is not None:
            expiry.cancel()
        caps.release(counted)
        fanout.unsubscribe(sub)
        sub.stop()
        WS_CONNECTIONS.dec()
    if (
        sink is None
        and websocket.client_state == websocket.application_state == WebSocketState.CONNECTED
    ):
        with contextlib.suppress(Exception):
            await websocket.close(1000)


async def is_trimmed(bus: EventBus, last_event_id: str) -> bool:
    """Whether entries after ``last_event_id`` may be gone (trimmed, deleted, or a new stream)."""
    last = parse_stream_id(last_event_id)
    info = await bus.stream_info()
    if info is None:
        return last > (0, 0)
    if last > parse_stream_id(info["last-generated-id"]):
        return True  # an id from the future: the stream was recreated
    deleted = info.get("max-deleted-entry-id")  # XDEL (Redis >= 7.0); trimming leaves it
    if deleted is not None and last < parse_stream_id(deleted):
        return True
    if info.get("entries-added", info["length"]) <= info["length"]:
        return False  # nothing ever removed
    # Something before the first kept entry was trimmed; stream ids are not dense, so a
    # client that last saw anything before it may have missed entries (conservative).
    first = info.get("recorded-first-entry-id") or (info.get("first-entry") or (None,))[0]
    if first is None:  # empty now: missed unless the client saw the very last entry
        return last < parse_stream_id(info["last-generated-id"])
    return last < parse_stream_id(first)


def partitions_of(sub: Subscriber, partitions: int) -> list[int]:
    """The partitions holding ``sub``'s events: its jobs', or every one for a user."""
    if sub.users or partitions == 1:
        return list(range(partitions))
    return sorted({partition_of_key(job, partitions) for job in sub.jobs})


async def resume(
    sub: Subscriber,
    last_event_id: str,
    position: str,
    bus: EventBus,
    limit: int,
    *,
    reader_at: Callable[[int], str],
    muted: Callable[[Event], str | None] = lambda event: None,
) -> None:
    """Backfill ``(last_event_id, position]`` for ``sub``, then release its live queue.

    A client may have seen more than this gateway's reader had read when it subscribed (it
    comes from another replica, or this one has just started): then its live queue is held
    until the reader (``reader_at(partition)``: the last entry it dispatched) is past the
    client's id, and nothing up to that id is sent again.

    At most ``limit`` entries are read (``WEBSOCKET_RESUME_MAX``, over all partitions):
    past that the client gets ``resync_required`` instead, so one reconnect cannot make the
    gateway decode the whole retained stream. So does an id naming another number of
    partitions than this deployment runs.
    """
    parts = bus.partitions
    ends = position.split(".")
    starts = parse_cursor(last_event_id, len(parts))
    wanted = partitions_of(sub, len(parts))
    after = [parse_stream_id(end) for end in ends]
    if starts is None or any([await is_trimmed(parts[p], starts[p]) for p in wanted]):
        await sub.send_now(RESYNC)
    else:
        ahead = {
            p: parse_stream_id(starts[p]) for p in wanted if parse_stream_id(starts[p]) > after[p]
        }
        caught_up = not ahead or await _reader_passes(reader_at, ahead)
        missed = await _missed(sub, starts, ends, wanted, bus, limit, muted) if caught_up else None
        for message in missed if missed is not None else [RESYNC]:
            await sub.send_now(message)
        for p, seen in ahead.items():
            after[p] = seen
    sub.go_live(after)


#: How long a resume waits for this gateway's reader to reach an id the client already has.
READER_CATCH_UP_S = 5.0


async def _reader_passes(reader_at: Callable[[int], str], ids: dict[int, StreamId]) -> bool:
    """Whether the reader reaches ``ids`` (per partition) within :data:`READER_CATCH_UP_S`."""
    deadline = time.monotonic() + READER_CATCH_UP_S
    while any(parse_stream_id(reader_at(p) or "0-0") < seen for p, seen in ids.items()):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def _missed(
    sub: Subscriber,
    starts: list[str],
    ends: list[str],
    wanted: list[int],
    bus: EventBus,
    limit: int,
    muted: Callable[[Event], str | None],
) -> list[Message] | None:
    """``sub``'s messages in ``(starts, ends]`` of the ``wanted`` partitions, in stream-id
    order, or None if over ``limit`` entries."""
    found: list[tuple[StreamId, int, str, Any]] = []
    read = 0
    for p in wanted:
        start, end = starts[p], ends[p]
        if parse_stream_id(start) >= parse_stream_id(end):
            continue
        start = f"({start}"
        while not sub.closed:
            # One entry past the limit tells "exactly at the limit" from "over it".
            count = min(_BACKFILL_PAGE, limit + 1 - read)
            entries = await bus.partitions[p].range(start, end, count=count)
            read += len(entries)
            if read > limit:
                return None
            for entry_id, fields in entries:
                try:
                    event = decode(fields)
                except DecodeError:
                    continue
                if matches(sub, event) and muted(event) not in sub.users:
                    found.append((parse_stream_id(entry_id), p, entry_id, event))
            if len(entries) < count:
                break
            start = f"({entries[-1][0]}"
    if len(bus.partitions) == 1:
        return [Message.from_event(entry_id, event) for _, _, entry_id, event in found]
    # Each message's id: what has been sent so far in every partition (a partition not
    # wanted holds nothing for ``sub`` up to its end).
    running = [starts[p] if p in wanted else ends[p] for p in range(len(ends))]
    out = []
    for _, p, entry_id, event in sorted(found, key=lambda f: (f[0], f[1])):
        running[p] = entry_id
        out.append(Message.from_event(entry_id, event, cursor=format_cursor(running), partition=p))
    return out
