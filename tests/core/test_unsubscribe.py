"""One-click unsubscribe tokens: bound to a user, channel and type; unforgeable; expiring."""

from __future__ import annotations

import time

import jwt
import pytest

from bookgen_events.events import EventType
from bookgen_events.unsubscribe import (
    InvalidUnsubscribeToken,
    Unsubscription,
    link,
    make_token,
    read_token,
)
from gateway.auth import Refused, verify_token

SECRET = "unsubscribe-secret-0123456789abcdef0123"


def test_a_token_reads_back_what_it_binds() -> None:
    token = make_token(SECRET, user_id="u1", channel="email", kind=EventType.COMPLETION, ttl_s=60)
    assert read_token(SECRET, token) == Unsubscription("u1", "email", EventType.COMPLETION)
    with_address = make_token(
        SECRET, user_id="u1", channel="email", kind=EventType.COMPLETION, ttl_s=60,
        address="ada@example.com",
    )  # fmt: skip
    assert read_token(SECRET, with_address).address == "ada@example.com"
    assert link("https://events.example.com/", token).startswith(
        "https://events.example.com/unsubscribe?token="
    )


def test_forged_changed_and_expired_tokens_are_refused() -> None:
    token = make_token(SECRET, user_id="u1", channel="email", kind=EventType.COMPLETION, ttl_s=60)
    with pytest.raises(InvalidUnsubscribeToken):
        read_token(SECRET + "x", token)  # another key
    claims = jwt.decode(token, options={"verify_signature": False})
    tampered = jwt.encode(
        {**claims, "sub": "u2"}, "a-guess-at-the-key-0123456789abcdef", algorithm="HS256"
    )
    with pytest.raises(InvalidUnsubscribeToken):
        read_token(SECRET, tampered)  # another user, re-signed without the key
    old = jwt.encode({**claims, "exp": int(time.time()) - 1}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidUnsubscribeToken, match="expired"):
        read_token(SECRET, old)
    other_kind = jwt.encode({**claims, "t": "lunch"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidUnsubscribeToken):
        read_token(SECRET, other_kind)


def test_an_unsubscribe_token_is_not_a_websocket_token() -> None:
    """Even signed with the WebSocket secret, its audience keeps it from opening a socket."""
    token = make_token(SECRET, user_id="u1", channel="email", kind=EventType.COMPLETION, ttl_s=60)
    with pytest.raises(Refused):
        verify_token(SECRET, token)
