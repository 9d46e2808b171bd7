"""Per-channel, per-recipient rate limits over sliding windows, shared by all replicas.

A recipient's limits are windows, ``(length in ms, limit)``: per minute and per hour by
default (``NOTIFICATION_RATE_LIMIT_PER_MINUTE``/``_PER_HOUR``, per channel), and a channel
may set a recipient's own (an endpoint's ``rate_limit_per_minute``, Discord's 5 per 2 s).

One Lua script (``scripts/rate_limit.lua``) checks every window of a hit and records it
atomically. :meth:`RateLimiter.check` batches: the hits asked for in one turn of the event
loop (a read batch's deliveries starting, the attempts of one event to its 100 endpoints)
go in one script call, so a delivery costs no round trip of its own (on a cluster, one
call per recipient, pipelined: each recipient's windows share a hash tag, not a slot with
the others). We considered the ``limits`` library's async moving window: it checks each
limit on its own (a hit the hourly limit refuses still spends a per-minute slot), builds its
own connection pool instead of using the injected client, and cannot recognise a retry of
the same notification. Here the hit's member is the event id, so a retry, a reclaimed entry
or a redelivery of a notification already counted in the window is not counted twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from . import scripts
from .connection import is_cluster, run_script_many
from .keys import StreamNames
from .outcomes import now_ms

#: One window: its length in ms and how many notifications it admits (0: no limit).
Window = tuple[int, int]
MINUTE_MS = 60_000
HOUR_MS = 3_600_000


def windows(per_minute: int, per_hour: int, *extra: Window) -> tuple[Window, ...]:
    """The windows of a per-minute and per-hour limit, and any ``extra`` ones."""
    return ((MINUTE_MS, per_minute), (HOUR_MS, per_hour), *extra)


class RateLimiter:
    """Sliding-window log limiter: exact counts over each window."""

    def __init__(self, redis: Redis, *, prefix: str = "bookgen") -> None:
        self._names = StreamNames(prefix, cluster=is_cluster(redis))
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._hit = scripts.register(redis, "rate_limit")
        self._pending: list[tuple[_Shape, str, asyncio.Future[bool]]] = []
        self._calls: set[asyncio.Task[None]] = set()
        # Per (channel, key, windows): its keys and script arguments, built once (they were
        # ~15 % of the dispatcher's own Python per delivery: bench/webhook.py's profile).
        self._shapes: dict[tuple[str, str, tuple[Window, ...]], _Shape | None] = {}

    def _keys(self, channel: str, key: str, wins: Sequence[Window]) -> list[str]:
        minute, hour = self._names.rate_limit(channel, key)
        return [
            minute if length == MINUTE_MS else hour if length == HOUR_MS else f"{minute}:{length}"
            for length, _ in wins
        ]

    def _shape(self, channel: str, key: str, wins: tuple[Window, ...]) -> _Shape | None:
        if not any(limit > 0 for _, limit in wins):
            return None
        args = [len(wins), *(x for window in wins for x in window)]
        return self._keys(channel, key, wins), args

    async def hit(
        self,
        channel: str,
        key: str,
        member: str,
        *,
        per_minute: int,
        per_hour: int,
        at_ms: int | None = None,
    ) -> bool:
        """Count one notification ``member`` for ``key`` now (one call of its own); False when
        over a limit (not counted). A limit of 0 disables that window."""
        if per_minute <= 0 and per_hour <= 0:
            return True
        wins = windows(per_minute, per_hour)
        (verdicts,) = await run_script_many(
            self._redis,
            self._hit,
            [
                (
                    self._keys(channel, key, wins),
                    [now_ms() if at_ms is None else at_ms, *_item(member, wins)],
                )
            ],
        )
        return bool(verdicts[0])

    async def check(self, channel: str, key: str, member: str, wins: Sequence[Window]) -> bool:
        """:meth:`hit` with any windows, batched with every other check of this loop turn."""
        verdict = self.reserve(channel, key, member, wins)
        return True if verdict is None else await verdict

    def reserve(
        self, channel: str, key: str, member: str, wins: Sequence[Window]
    ) -> asyncio.Future[bool] | None:
        """Start a batched check now and return its verdict to await later (None: no limit).

        The consumer reserves a read batch's deliveries as it queues them, so by the time a
        worker starts one its verdict has usually arrived: the check costs the delivery no
        wait of its own.
        """
        wins = tuple(wins)
        try:
            shape = self._shapes[channel, key, wins]
        except KeyError:
            if len(self._shapes) >= 65536:
                self._shapes.clear()
            shape = self._shapes[channel, key, wins] = self._shape(channel, key, wins)
        if shape is None:
            return None
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[bool] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after every check already runnable this turn
        self._pending.append((shape, member, verdict))
        return verdict

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        call = asyncio.create_task(self._run(batch))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _run(self, batch: list[tuple[_Shape, str, asyncio.Future[bool]]]) -> None:
        now = now_ms()
        calls: list[tuple[list[str], list[Any]]]
        if self._cluster:  # one call per recipient (its own hash tag), pipelined
            calls = [(keys, [now, member, *args]) for (keys, args), member, _ in batch]
        else:
            keys: list[str] = []
            argv: list[Any] = [now]
            for (item_keys, args), member, _ in batch:
                keys += item_keys
                argv.append(member)
                argv += args
            calls = [(keys, argv)]
        try:
            replies = await run_script_many(self._redis, self._hit, calls)
        except BaseException as exc:  # Redis down: every check of the batch raises it
            for _, _, verdict in batch:
                if verdict.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    verdict.cancel()
                else:
                    verdict.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        results = [v for reply in replies for v in reply]
        for (_, _, verdict), allowed in zip(batch, results, strict=True):
            if not verdict.done():  # its delivery may have been cancelled meanwhile
                verdict.set_result(bool(allowed))


def _item(member: str, wins: Sequence[Window]) -> list[Any]:
    return [member, len(wins), *(x for window in wins for x in window)]


#: A recipient's window keys, and its script arguments after the member.
_Shape = tuple[list[str], list[Any]]
