"""uvicorn's sans-I/O WebSocket protocol plus a synchronous write path for pre-framed bytes.

Why: a broadcast sends the same message to thousands of sockets. Through plain ASGI every
delivery costs a task wake-up, an ``await send`` and a frame built per client; here the
fan-out frames each event once (``encode_text_frame``) and writes those same bytes straight
to each writable transport, and a backed-up client gets its queue joined into one write.

The app finds this path as the ASGI scope extension ``EXTENSION`` and falls back to plain
``websocket.send`` when it is absent (another server or protocol), so it stays a normal
ASGI app. Compression is off for this protocol (``ws_per_message_deflate=False`` in
``serve``): per-client deflate would defeat framing once.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

EXTENSION = "bookgen.frames"
_ABORT_AFTER_S = 5.0


def encode_text_frame(text: str) -> bytes:
    """One unmasked, final, uncompressed text frame — identical for every client."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class FramedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds ``try_write`` / ``wait_writable`` / ``force_close`` for the fan-out."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # the app task has been created but has not run yet
            scope["extensions"][EXTENSION] = {"sink": self}

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            # The parser refused the request (e.g. a request line over 8 KiB): uvicorn would
            # leave the socket open and unanswered, one held connection per such request.
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.transport.close()

    @property
    def open(self) -> bool:
        return self.handshake_complete and not self.close_sent and not self.disconnected

    def try_write(self, data: bytes) -> bool:
        """Write now if the socket keeps up; False means the caller must queue and wait."""
        if not self.writable.is_set() or not self.open:
            return False
        self.transport.write(data)
        return True

    async def wait_writable(self) -> bool:
        """Wait until the transport drains below its low-water mark; False if closed."""
        await self.writable.wait()
        return self.open

    def force_close(self, code: int, reason: str) -> None:
        """Queue a close frame even if the client stopped reading, and abort if it never drains.

        A plain ASGI close waits for the socket to become writable, which a stalled client
        never allows; this must not wait, since the fan-out calls it synchronously.
        """
        if not self.open:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.stop_keepalive()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # transport.close() would wait forever for a buffer a stalled client never reads.
        self.close_timer = self.loop.call_later(_ABORT_AFTER_S, self.transport.abort)
