"""Where ``up`` and ``gateway`` may listen, checked before anything starts."""

from __future__ import annotations

import ipaddress
import socket

from ..errors import ConfigError, GatewayBindError
from ..settings import Settings
from .runner import failure_reason


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_open_websockets(settings: Settings, host: str) -> None:
    """WEBSOCKET_AUTH=none is for a gateway only this machine can reach (SPEC 8)."""
    if settings.websocket_enabled and settings.websocket_auth == "none" and not is_loopback(host):
        raise ConfigError(
            f"WEBSOCKET_AUTH=none refuses to listen on {host}: unauthenticated WebSockets are "
            "for loopback only (127.0.0.1, ::1, localhost); unset WEBSOCKET_AUTH to use tokens"
        )


def probe_listen(host: str, port: int) -> None:
    """Raise :class:`GatewayBindError` now if ``host:port`` cannot be listened on.

    Bound as uvicorn binds (SO_REUSEADDR), then released: a start that cannot serve fails
    before it starts anything else. The gateway's own bind stays the final word.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), port))
    except socket.gaierror as exc:
        raise GatewayBindError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except OSError as exc:
        raise GatewayBindError(f"cannot listen on {host}:{port}: {failure_reason(exc)}") from None


def own_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` of a server bound to ``host`` (a wildcard bind: its loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
