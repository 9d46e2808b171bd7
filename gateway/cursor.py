"""The resume id: where a WebSocket client is in every partition's stream.

Each message a client receives carries an ``id``; sent back as ``last_event_id`` it resumes
the subscription exactly after that message (no gap, no duplicate).

- ``STREAM_PARTITIONS=1``: the id is the event's stream entry id, ``1700000000000-3``, as
  it always was.
- ``STREAM_PARTITIONS=N`` (N > 1): the id is N stream ids joined by dots, partition 0
  first: ``1700000000000-3.1700000000002-0.0-0`` (about 16 characters a partition). Each is
  the position in that partition's stream up to which every event for the subscription has
  been sent. The message's own event is the one at its partition's position.

A single stream id given with N > 1 stands for that position in every partition: ``0-0``
asks for everything retained (exact); another plain id resumes at that time in each
partition (stream ids are times; only the dotted ids the gateway sent are exact).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

StreamId = tuple[int, int]

MAX_PARTITIONS = 1024
_POSITION = r"\d{1,20}(?:-\d{1,20})?"
CURSOR = re.compile(rf"{_POSITION}(?:\.{_POSITION}){{0,{MAX_PARTITIONS - 1}}}")


def parse_stream_id(value: str) -> StreamId:
    """``"1700000000000-3"`` (or ``"1700000000000"``) -> ``(1700000000000, 3)``."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def format_cursor(positions: Sequence[str]) -> str:
    """The id for ``positions`` (one stream id per partition)."""
    return ".".join(positions)


def parse_cursor(text: str, partitions: int) -> list[str] | None:
    """The position in each of ``partitions`` streams, or None when ``text`` names another
    number of partitions (an id from another layout: the client must resync).

    ``text`` has been checked against :data:`CURSOR` already.
    """
    positions = text.split(".")
    if len(positions) == 1:
        return positions * partitions
    return positions if len(positions) == partitions else None
