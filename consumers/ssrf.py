"""SSRF guard: outbound HTTP targets (webhook, Slack, Discord, Twilio) may only reach public
addresses.

The URL's shape is checked first, always (:mod:`bookgen_events.targets`: no userinfo, no
numeric host forms that parsers read differently).

A check of the URL's host name before sending is not enough: the name can resolve to a public
address when checked and to ``127.0.0.1`` when connected (DNS rebinding). So the check sits in
the HTTP client's resolver (:class:`GuardedResolver`), on the very addresses the connector is
about to use. Literal IP hosts never reach a resolver, so :func:`check_url` checks those (a
literal cannot change between check and connect).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from bookgen_events.targets import target_problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata services (credentials live there); named in refusals for clarity.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix embedding an IPv4 address
ALLOW_HINT = " (set WEBHOOK_ALLOW_PRIVATE=true to allow private targets, e.g. on an intranet)"


class SSRFBlocked(OSError):
    """A webhook target is (or resolves to) an address webhooks may not reach.

    An ``OSError`` so aiohttp's connector treats it as a failed lookup and keeps it as the
    cause of the error it raises; the channel finds it there and rejects the delivery.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # ::ffff:a.b.c.d, 64:ff9b::a.b.c.d and 6to4 all lead to an IPv4 host.
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why ``address`` may not be a webhook target, or None when it is a public address."""
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
        inner = _embedded_ipv4(addr)
        if inner is not None:
            reason = blocked_reason(inner)
            return f"{reason} (embedded in {addr})" if reason else None
    if addr in METADATA_ADDRESSES:
        kind = "cloud metadata"
    elif addr.is_unspecified:
        kind = "unspecified"
    elif addr.is_loopback:
        kind = "loopback"
    elif addr.is_link_local:
        kind = "link-local"
    elif addr.is_multicast:
        kind = "multicast"
    elif addr.is_reserved:
        kind = "reserved"
    elif addr.is_private:
        kind = "private"
    elif not addr.is_global:
        kind = "non-public"  # e.g. 100.64.0.0/10 carrier-grade NAT
    else:
        return None
    return f"{kind} address {addr}"


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Raise :class:`SSRFBlocked` if any address ``host`` resolved to is not public.

    One bad address refuses the host: a name that mixes public and private answers is
    either misconfigured or an attack, and either way not a target.
    """
    for address in addresses:
        reason = blocked_reason(address)
        if reason is not None:
            raise SSRFBlocked(f"target {host!r} resolves to a {reason}{ALLOW_HINT}")


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL of a refused shape (always) and, unless ``allow_private``, a literal
    non-public IP host."""
    problem = target_problem(url)
    if problem is not None:
        raise SSRFBlocked(f"target {problem}")
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: checked after resolution, at connect time
    reason = blocked_reason(addr)
    if reason is not None:
        raise SSRFBlocked(f"target is a {reason}{ALLOW_HINT}")


# Cached (the answer depends on the text alone, and a dispatcher sends to a handful of URLs):
# the check costs 11 us, a cached answer 0.25 us, per delivery (timeit, this box;
# bench/webhook.py's dispatcher CPU per delivery).
@functools.lru_cache(maxsize=4096)
def url_problem(url: str, allow_private: bool) -> str | None:
    """:func:`check_url` as a value: why ``url`` is refused before connecting, or None."""
    try:
        check_url(url, allow_private=allow_private)
    except SSRFBlocked as exc:
        return exc.reason
    return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to non-public addresses.

    It wraps another resolver (aiohttp's threaded ``getaddrinfo`` one by default); the
    connector connects only to the addresses returned here, so what is checked is what is used.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        if inner is None:
            from aiohttp import ThreadedResolver

            inner = ThreadedResolver()
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        check_addresses(host, (r["host"] for r in results))
        return results

    async def close(self) -> None:
        await self._inner.close()


def find_blocked(exc: BaseException) -> SSRFBlocked | None:
    """The :class:`SSRFBlocked` somewhere in ``exc``'s cause chain, if any."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SSRFBlocked):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
