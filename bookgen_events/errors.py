"""The exception tree of bookgen-events.

    BookgenEventsError
    ├── ConfigError (ValueError)          a setting is missing or malformed; names the variable
    ├── EventValidationError (ValueError) an event failed validation at the edge; nothing written
    │   └── EventTooLargeError            the encoded event exceeds MAX_EVENT_BYTES
    ├── DecodeError (ValueError)          a stream entry cannot be decoded (a poison entry)
    ├── EmbeddedServerError               the embedded Redis server could not be started
    ├── GatewayBindError                  the gateway cannot listen on its host and port
    ├── Unreachable                       Redis, SQL or SMTP does not answer; one line says where
    └── OffsetError (ValueError)          a replay offset is malformed or out of range

Control flow for channels (not errors of the library, so not under the root):

    RetryLater   the delivery failed transiently; try again on the channel's schedule
    Reject       the delivery failed for good; dead-letter it now
"""

from __future__ import annotations

from typing import Any


class BookgenEventsError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigError(BookgenEventsError, ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


class EventValidationError(BookgenEventsError, ValueError):
    """An event is invalid; ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class EventTooLargeError(EventValidationError):
    """The encoded event is larger than ``MAX_EVENT_BYTES``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"event is {size} bytes encoded, over MAX_EVENT_BYTES={limit}",
            [("event", f"{size} bytes > {limit}")],
        )
        self.size = size
        self.limit = limit


class DecodeError(BookgenEventsError, ValueError):
    """A stream entry could not be decoded into an event (a poison entry)."""

    def __init__(self, message: str, fields: dict[str, Any], error: Exception | None = None):
        super().__init__(message)
        self.fields = fields
        self.error = error


class EmbeddedServerError(BookgenEventsError):
    """The embedded Redis-compatible server could not be started or reached."""


class GatewayBindError(BookgenEventsError):
    """The gateway cannot listen on its host and port (in use, or not an address here)."""


class Unreachable(BookgenEventsError):
    """A service a command needs does not answer: one line naming what, where and why.

    ``cannot reach Redis at redis://:***@127.0.0.1:6399/0 (REDIS_URL): connection refused``
    (``url`` comes with its password already masked).
    """

    def __init__(self, what: str, url: str, variable: str, reason: str) -> None:
        self.what, self.url, self.variable, self.reason = what, url, variable, reason
        super().__init__(f"cannot reach {what} at {url} ({variable}): {reason}")


class OffsetError(BookgenEventsError, ValueError):
    """A stream offset (id or ISO time) is malformed or outside the retained range."""


class RetryLater(Exception):  # a verb, as dramatiq's Retry
    """Raised by a channel: transient failure, retry after ``delay`` seconds (or the schedule's)."""

    def __init__(
        self, reason: str, *, delay: float | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.status_code = status_code


class Reject(Exception):  # a verb, as faststream's RejectMessage
    """Raised by a channel: permanent failure, dead-letter now with ``reason``."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
