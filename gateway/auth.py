"""WebSocket tokens: HS256 JWTs naming the user and/or jobs their holder may watch.

Claims: ``sub`` = user_id (optional), ``jobs`` = job ids (may be empty), ``iat``, ``exp``.
A token never widens itself: a connection may only subscribe to what its claims list.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import jwt
from jwt.warnings import InsecureKeyLengthWarning

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash
MISSING_TOKEN = "missing token: mint one with bookgen-events token --job-id ID (or --user-id)"


def weak_secret(secret: str) -> bool:
    """Whether the secret is shorter than HS256 needs (the gateway refuses it at start)."""
    return len(secret.encode()) < MIN_SECRET_BYTES


class Refused(Exception):
    """The connection is refused; ``reason`` is sent to the client in the 1008 close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows, and until when (``expires_at``, Unix seconds)."""

    user_id: str | None
    job_ids: frozenset[str]
    expires_at: float


def mint_token(
    secret: str,
    *,
    user_id: str | None,
    job_ids: list[str],
    ttl_s: int,
    max_ttl_s: float | None = None,
) -> str:
    """Sign a token letting its holder watch ``user_id``'s events and/or ``job_ids``."""
    if not secret:
        raise ValueError("cannot sign a token with an empty secret")
    if not user_id and not job_ids:
        raise ValueError("a token must name a user_id and/or at least one job_id")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if max_ttl_s is not None and ttl_s > max_ttl_s:
        raise ValueError(
            f"a token may live {max_ttl_s:g} s at most (WEBSOCKET_TOKEN_MAX_TTL), not {ttl_s} s"
        )
    now = int(time.time())
    claims: dict[str, object] = {
        "jobs": list(dict.fromkeys(job_ids)),
        "iat": now,
        "exp": now + ttl_s,
    }
    if user_id:
        claims["sub"] = user_id
    with warnings.catch_warnings():  # a short key is reported once, at start-up
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, *, max_ttl_s: float | None = None) -> Grant:
    """Decode and check ``token``; raises :class:`Refused` with a reason safe to show.

    With ``max_ttl_s``, a token made to live longer than that (``exp - iat``) is refused
    too: a leaked hundred-year token must not be a key for ever.
    """
    if not token:
        raise Refused(MISSING_TOKEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat"]}
            )
    except jwt.ExpiredSignatureError:
        raise Refused("token expired") from None
    except jwt.InvalidSignatureError:
        raise Refused("token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Refused(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise Refused("malformed token") from None
    user_id = claims.get("sub")
    jobs = claims.get("jobs", [])
    if (user_id is not None and not isinstance(user_id, str)) or not isinstance(jobs, list):
        raise Refused("malformed token claims")
    expires_at, issued_at = claims["exp"], claims["iat"]
    if not isinstance(expires_at, int | float) or not isinstance(issued_at, int | float):
        raise Refused("malformed token claims")
    if max_ttl_s is not None and expires_at - issued_at > max_ttl_s:
        raise Refused("token lives longer than WEBSOCKET_TOKEN_MAX_TTL allows: mint a shorter one")
    return Grant(user_id, frozenset(str(j) for j in jobs), float(expires_at))


def authorize(grant: Grant, *, job_id: str | None, user_id: str | None) -> None:
    """Refuse unless the grant covers every requested subscription."""
    if user_id is not None and user_id != grant.user_id:
        raise Refused("token does not allow this user_id")
    if job_id is not None and job_id not in grant.job_ids:
        raise Refused("token does not allow this job_id")
