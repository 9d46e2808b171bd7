"""The shape an outbound HTTP target must have, whatever ``WEBHOOK_ALLOW_PRIVATE`` says.

Checked where a URL enters the system (``emit``, endpoint creation) and again before each
connection. Two shapes are refused outright because parsers disagree about them, which is
how SSRF guards are bypassed:

- a host that is all digits and dots, or hex, but not a canonical dotted quad
  (``2130706433``, ``127.1``, ``0``, ``0x7f.1``, ``010.0.0.1``): ``inet_aton`` and some HTTP
  clients read these as ``127.0.0.1``, an address check on the text does not;
- userinfo (``user:pass@host``): credentials do not belong in a target URL, and
  ``http://trusted@evil/`` is read as "trusted" by people.

Whether the address a name resolves to is public is the connect-time guard's business
(``consumers.ssrf``), not this module's.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

_SCHEMES = ("http", "https")
# Every label a decimal or hex number: something an IPv4 parser may take for an address.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?$", re.I)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"^{_OCTET}(?:\.{_OCTET}){{3}}$")


# Cached (the answer depends on the text alone): producers send to a handful of URLs, and a
# parse cost ~1 us of emit_many's ~19 us per event. bench/emit.py, emit_many vs pipelined
# XADD: 0.75-0.79x without the cache, 0.83-0.87x with it (same box, same hour).
@functools.lru_cache(maxsize=4096)
def target_problem(url: str) -> str | None:
    """Why ``url`` may not be an outbound target, or None when its shape is acceptable."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in _SCHEMES:
        return f"has scheme {parts.scheme!r}: only http and https are allowed"
    if not host:
        return "has no host"
    if "@" in parts.netloc:
        return "carries a user name or password (user@host): put credentials in headers"
    if _NUMERIC_HOST.match(host) and not _DOTTED_QUAD.match(host):
        return (
            f"has host {host!r}, a numeric form that is not a canonical dotted quad: "
            "write the address as four decimal numbers (e.g. 203.0.113.7) or use a name"
        )
    return None
