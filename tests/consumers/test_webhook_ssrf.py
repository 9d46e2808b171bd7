"""The SSRF guard: address classification, the resolver hook, and refusals end to end.

Only loopback is ever contacted: names resolve through a fixed test resolver or /etc/hosts,
and refused addresses are refused before any connection is attempted.
"""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from bookgen_events.bus import EventBus
from bookgen_events.errors import EventValidationError, Reject
from bookgen_events.events import WIRE_FIELD, Event
from bookgen_events.settings import Settings
from consumers.ssrf import GuardedResolver, SSRFBlocked, blocked_reason, check_url
from consumers.webhook import open_channel
from tests.support.outcomes import dead_letters, final_outcomes
from tests.support.webhooks import Receiver, running


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("2002:0a00:0001::1", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_blocked(address: str, kind: str) -> None:
    """Each non-public range is refused, and the reason names its kind."""
    reason = blocked_reason(address)
    assert reason is not None and reason.startswith(kind), reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com", "//x"]
)
def test_non_http_schemes_are_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(SSRFBlocked):
        check_url(url, allow_private=True)


def test_literal_hosts_are_checked_names_are_left_to_the_resolver() -> None:
    """IP literals never reach a resolver, so the URL check refuses them itself."""
    with pytest.raises(SSRFBlocked, match="cloud metadata"):
        check_url("http://169.254.169.254/latest/meta-data/", allow_private=False)
    with pytest.raises(SSRFBlocked, match="loopback"):
        check_url("https://[::1]:8443/hook", allow_private=False)
    check_url("http://127.0.0.1/hook", allow_private=True)
    check_url("https://hooks.example.com/in", allow_private=False)


class FixedResolver(AbstractResolver):
    """DNS answers from a table, so resolution is tested without a network."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_checks_every_answer() -> None:
    """A name with any non-public answer is refused; public answers pass through unchanged."""
    inner = FixedResolver(
        {
            "rebind.example": ["169.254.169.254"],
            "mixed.example": ["93.184.216.34", "10.0.0.7"],
            "public.example": ["93.184.216.34", "2606:4700:4700::1111"],
        }
    )
    guard = GuardedResolver(inner)
    with pytest.raises(SSRFBlocked, match=r"'rebind\.example' resolves to a cloud metadata"):
        await guard.resolve("rebind.example", 80)
    with pytest.raises(SSRFBlocked, match=r"private address 10\.0\.0\.7"):
        await guard.resolve("mixed.example", 80)
    results = await guard.resolve("public.example", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_guarded_resolver_with_the_system_resolver() -> None:
    """The default (getaddrinfo) path: localhost, from /etc/hosts, is refused."""
    with pytest.raises(SSRFBlocked, match="loopback"):
        await GuardedResolver().resolve("localhost", 80)


async def test_name_resolving_to_loopback_is_refused_at_connect_time(
    webhook_settings: Settings, receiver: Receiver
) -> None:
    """The real client uses the guarded resolver: a name pointing at loopback never connects.

    With the guard off, the same name and resolver do reach the receiver, which proves the
    resolver is the one the client connects through.
    """
    port = receiver.base_url.rsplit(":", 1)[1]
    url = f"http://hooks.test:{port}/hook/a"
    event = Event(type="progress_update", job_id="1", data={"progress": 1}, webhook_url=url)
    resolver = FixedResolver({"hooks.test": ["127.0.0.1"]})

    guarded = webhook_settings.model_copy(update={"webhook_allow_private": False})
    async with open_channel(guarded, resolver=resolver) as channel:
        with pytest.raises(Reject, match=r"SSRF guard.*'hooks.test' resolves to a loopback"):
            await channel.deliver(event, url)
    assert resolver.asked == ["hooks.test"] and receiver.requests == []

    async with open_channel(webhook_settings, resolver=resolver) as channel:
        assert await channel.deliver(event, url) == 200
    assert len(receiver.at("a")) == 1


async def test_refusals_are_dead_lettered_with_the_reason(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """Through the consumer: a loopback target is dead-lettered after one attempt, never sent."""
    guarded = webhook_settings.model_copy(update={"webhook_allow_private": False})
    await bus.emit(
        Event(
            type="progress_update", job_id="1", data={"progress": 1}, webhook_url=receiver.url("a")
        )
    )
    async with running(bus, guarded):
        (final,) = await final_outcomes(bus, 1)

    assert (final.status, final.attempt) == ("failed", 1)
    (letter,) = await dead_letters(bus)
    assert letter.reason.startswith("refused (SSRF guard): target is a loopback address 127.0.0.1")
    assert "WEBHOOK_ALLOW_PRIVATE" in letter.reason
    assert receiver.requests == []


async def test_non_http_scheme_is_rejected_by_the_channel(webhook_settings: Settings) -> None:
    """Defence in depth: even an event that skipped validation cannot make us fetch file://."""
    event = Event.model_construct(
        **Event(type="admin_alert", data={"alert_type": "a", "message": "m"}).__dict__
    )
    async with open_channel(webhook_settings) as channel:
        with pytest.raises(Reject, match="scheme 'file'"):
            await channel.deliver(event, "file:///etc/passwd")


def _aliases(port: int) -> list[str]:
    """Loopback written the ways parsers disagree about, and with userinfo."""
    return [
        f"http://2130706433:{port}/hook/a",  # decimal
        f"http://127.1:{port}/hook/a",  # short form
        f"http://0:{port}/hook/a",  # zero
        f"http://0x7f.1:{port}/hook/a",  # hex
        f"http://0177.0.0.1:{port}/hook/a",  # octal-looking
        f"http://user@127.0.0.1:{port}/hook/a",  # userinfo
        f"http://a:b@hooks.example.com:{port}/hook/a",
    ]


async def test_non_canonical_hosts_and_userinfo_are_refused_at_emit(
    bus: EventBus, receiver: Receiver
) -> None:
    """Whatever WEBHOOK_ALLOW_PRIVATE says, emit refuses these shapes with a clear message."""
    port = int(receiver.base_url.rsplit(":", 1)[1])
    for url in _aliases(port):
        with pytest.raises(EventValidationError, match="webhook_url") as info:
            await bus.emit({"type": "progress_update", "data": {"progress": 1}, "webhook_url": url})
        assert "dotted quad" in str(info.value) or "user name or password" in str(info.value)
    assert await bus.length() == 0


async def test_non_canonical_hosts_and_userinfo_are_refused_at_connect(
    bus: EventBus, webhook_settings: Settings, receiver: Receiver
) -> None:
    """An entry that skipped emit (written raw) is dead-lettered at once, never sent, no retry."""
    port = int(receiver.base_url.rsplit(":", 1)[1])
    urls = _aliases(port)
    for url in urls:
        event = Event(type="progress_update", job_id=url, data={"progress": 1}, webhook_url=url)
        await bus.redis.xadd(bus.names.events, {WIRE_FIELD: event.model_dump_json()})
    assert webhook_settings.webhook_allow_private  # refused all the same
    async with running(bus, webhook_settings):
        finals = await final_outcomes(bus, len(urls))
    assert {(o.status, o.attempt) for o in finals} == {("failed", 1)}
    letters = await dead_letters(bus)
    assert len(letters) == len(urls)
    assert all("SSRF guard" in d.reason for d in letters)
    assert receiver.requests == []
