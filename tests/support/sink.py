"""A stand-in for the gateway's framed socket transport: the seam a ``Subscriber`` writes through.

It keeps the real transport's contract (``try_write`` writes now or returns False when the
socket is not writable; ``wait_writable`` waits, then says whether it is still open) and
records every write, so fan-out and subscriber tests can see exactly what went on the wire.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Sink:
    """Records the bytes written; ``stall()`` and ``drain()`` play a client that stops and
    resumes reading."""

    def __init__(self, *, writable: bool = True) -> None:
        self.writes: list[bytes] = []
        self.writable = asyncio.Event()
        self.open = True
        if writable:
            self.writable.set()

    def try_write(self, data: bytes) -> bool:
        if not self.writable.is_set() or not self.open:
            return False
        self.writes.append(data)
        return True

    async def wait_writable(self) -> bool:
        await self.writable.wait()
        return self.open

    def stall(self) -> None:
        self.writable.clear()

    def drain(self) -> None:
        self.writable.set()

    def texts(self) -> list[str]:
        """The text of every frame written, in order (server frames: unmasked, final)."""
        data, texts = b"".join(self.writes), []
        while data:
            assert data[0] == 0x81, "a final text frame"
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(data[2:4]), 4
            elif length == 127:
                length, start = int.from_bytes(data[2:10]), 10
            texts.append(data[start : start + length].decode())
            data = data[start + length :]
        return texts

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts()]

    def ids(self) -> list[str]:
        """The stream ids of the event messages written, in order."""
        return [m["id"] for m in self.messages()]
