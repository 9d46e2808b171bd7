"""Partitions and key names: stable, spread over the slot ranges, and the plain names kept."""

from __future__ import annotations

from bookgen_events.events import Event, make_event
from bookgen_events.keys import StreamNames
from bookgen_events.partitions import partition_of, partition_tag, slot_of_tag


def _event(**fields: str) -> Event:
    return make_event({"type": "progress_update", "data": {"progress": 1}, **fields})


def test_plain_names_are_as_before_partitions() -> None:
    """One partition on a plain Redis: every key name exactly as deployments already have."""
    names = StreamNames("bookgen")
    assert names.events == "bookgen:events"
    assert names.deliveries == "bookgen:deliveries"
    assert names.dlq("webhook") == "bookgen:dlq:webhook"
    assert names.scheduled("email") == "bookgen:scheduled:email"
    assert names.rate_limit("webhook", "k") == ["bookgen:rl:webhook:m:k", "bookgen:rl:webhook:h:k"]
    assert names.endpoints == "bookgen:endpoints"
    assert names.changes(names.endpoints) == "bookgen:endpoints:changes"
    assert names.subscribers == "bookgen:subscribers"
    assert names.endpoint_health == "bookgen:endpoints:health"
    assert names.idempotency("e1") == "bookgen:events:idem:e1"
    assert names.held == ("bookgen:events:held", "bookgen:events:held:events")


def _slot(key: str) -> int:
    return slot_of_tag(key[key.index("{") + 1 : key.index("}")])


def test_keys_a_script_touches_share_one_slot() -> None:
    """In a cluster every multi-key script's keys hash to one slot (commit, emit, rate limit,
    registry MULTI)."""
    for partition in range(6):
        names = StreamNames("p", partition=partition, partitions=6, cluster=True)
        commit = [names.deliveries, names.dlq("webhook"), names.scheduled("webhook"), names.events]
        emit = [names.events, *names.held, names.idempotency("some-id")]
        assert len({_slot(k) for k in commit + emit}) == 1
    names = StreamNames("p", cluster=True)
    assert len({_slot(k) for k in names.rate_limit("webhook", "https://x/{y}")}) == 1
    assert _slot(names.endpoints) == _slot(names.changes(names.endpoints))
    assert _slot(names.subscribers) == _slot(names.changes(names.subscribers))


def test_partition_tags_spread_over_even_slot_ranges() -> None:
    """Partition i's slot lies inside the i-th of N equal ranges: with 6 partitions on 3
    masters' even split, two on each master."""
    masters = [(0, 5460), (5461, 10922), (10923, 16383)]
    per_master = [0, 0, 0]
    for i in range(6):
        slot = slot_of_tag(partition_tag(i, 6))
        assert i * 16384 / 6 <= slot < (i + 1) * 16384 / 6
        per_master[next(m for m, (lo, hi) in enumerate(masters) if lo <= slot <= hi)] += 1
    assert per_master == [2, 2, 2]


def test_partition_of_is_stable_and_keeps_a_job_together() -> None:
    """The same job always lands on the same partition (a fixed CRC, not Python's hash),
    whatever its user or id; without a job, the user decides, then the id."""
    a = _event(job_id="job-42", user_id="u1")
    b = _event(job_id="job-42", user_id="u2")
    assert partition_of(a, 6) == partition_of(b, 6) == 5  # pinned: a change would move jobs
    assert partition_of(_event(user_id="u1"), 6) == partition_of(_event(user_id="u1"), 6)
    spread = {partition_of(_event(job_id=f"job-{i}"), 6) for i in range(60)}
    assert spread == set(range(6))
    assert partition_of(a, 1) == 0
