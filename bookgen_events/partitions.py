"""Partitions: which of ``STREAM_PARTITIONS`` streams an event goes to, and their hash tags.

An event's partition is a stable hash (CRC-32, the same in every process and version, unlike
Python's ``hash``) of its ``job_id``, else its ``user_id``, else its id, modulo N: one job's
events all go to one partition, where the stream keeps them in order, and every channel
reads a partition in order, so one job's events are delivered in the order they were
emitted.

Each partition's keys share one Redis Cluster hash tag (see :mod:`~bookgen_events.keys`).
The tag of partition ``i`` of ``n`` is ``i.k`` for the smallest ``k`` whose CRC16 slot lies
in the middle half of the ``i``-th of ``n`` equal slot ranges: with the even split a cluster
is created with (``valkey-cli --cluster create``), ``n`` a multiple of the masters' count
puts ``n / masters`` partitions on each master, and never on a range's edge.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from functools import cache
from typing import Protocol

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .events import Event

__all__ = [
    "PartitionedEmitter",
    "partition_key",
    "partition_of",
    "partition_of_key",
    "partition_tag",
    "slot_of_tag",
]


def partition_key(event: Event) -> str:
    """What an event is partitioned by: its job, else its user, else itself."""
    return event.job_id or event.user_id or event.id


def partition_of(event: Event, partitions: int) -> int:
    """The partition (0 .. ``partitions`` - 1) of ``event``."""
    return partition_of_key(partition_key(event), partitions)


def partition_of_key(key: str, partitions: int) -> int:
    """The partition of the events whose :func:`partition_key` is ``key`` (e.g. a job's)."""
    if partitions == 1:
        return 0
    return zlib.crc32(key.encode()) % partitions


def slot_of_tag(tag: str) -> int:
    """The cluster hash slot of every key carrying ``{tag}``."""
    return int(key_slot(tag.encode()))


@cache
def partition_tag(index: int, partitions: int) -> str:
    """The hash tag of partition ``index`` of ``partitions`` (see the module doc)."""
    if not 0 <= index < partitions:
        raise ValueError(f"partition {index} out of 0..{partitions - 1}")
    width = REDIS_CLUSTER_HASH_SLOTS / partitions
    low, high = index * width + width / 4, (index + 1) * width - width / 4
    k = 0
    while not low <= slot_of_tag(f"{index}.{k}") < max(high, low + 1):
        k += 1
    return f"{index}.{k}"


class _Emitter(Protocol):
    async def emit(self, event: Event, payload: bytes) -> str: ...

    async def emit_many(self, encoded: Sequence[tuple[Event, bytes]]) -> list[str]: ...


class PartitionedEmitter:
    """Emits each event through its partition's emitter; a batch split by partition, the
    parts written concurrently (on a cluster, to different nodes), the ids in input order.

    An event id is idempotent within its partition: a retried emit of the same event (same
    job) lands on the same partition and appends nothing.
    """

    def __init__(self, emitters: Sequence[_Emitter]) -> None:
        self.emitters = list(emitters)

    async def emit(self, event: Event, payload: bytes) -> str:
        return await self.emitters[partition_of(event, len(self.emitters))].emit(event, payload)

    async def emit_many(self, encoded: Sequence[tuple[Event, bytes]]) -> list[str]:
        count = len(self.emitters)
        parts: dict[int, list[int]] = {}
        for i, (event, _) in enumerate(encoded):
            parts.setdefault(partition_of(event, count), []).append(i)
        replies = await asyncio.gather(
            *(self.emitters[p].emit_many([encoded[i] for i in at]) for p, at in parts.items())
        )
        out = [""] * len(encoded)
        for at, ids in zip(parts.values(), replies, strict=True):
            for i, stream_id in zip(at, ids, strict=True):
                out[i] = stream_id
        return out
