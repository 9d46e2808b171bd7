"""Event ids: UUIDv7 (RFC 9562), unique and time-ordered, monotonic within a process.

The id is the idempotency key everywhere (webhook-id, Message-ID, log rows, emit's check).
"""

from __future__ import annotations

import os
import threading
import time

_uuid_lock = threading.Lock()
_uuid_last = 0
_RAND_B = (1 << 62) - 1


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): unique and time-ordered, monotonic within this process."""
    global _uuid_last
    rand = int.from_bytes(os.urandom(10))  # 12 bits to seed rand_a, 62 for rand_b
    with _uuid_lock:
        # 48-bit ms timestamp + 12-bit rand_a used as a sub-ms counter: bump on collision.
        candidate = ((time.time_ns() // 1_000_000) << 12) | (rand >> 68)
        if candidate <= _uuid_last:
            candidate = _uuid_last + 1
        _uuid_last = candidate
    value = (
        ((candidate >> 12) << 80)  # unix_ts_ms
        | (0x7 << 76)  # version
        | ((candidate & 0x0FFF) << 64)  # rand_a
        | (0b10 << 62)  # variant
        | (rand & _RAND_B)
    )
    h = value.to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
