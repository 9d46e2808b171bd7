"""Every Redis key of one deployment, in one place: a cluster hash tag is a change here only.

For ``STREAM_PREFIX=bookgen`` on a plain Redis with one partition (the names are as they
have always been):

- ``bookgen:events``               the immutable event log, trimmed approximately at STREAM_MAXLEN
- ``bookgen:deliveries``           one outcome entry per delivery attempt
- ``bookgen:dlq:<channel>``        dead letters of a channel, never trimmed
- ``bookgen:scheduled:<channel>``  deliveries due later (retries, replays, redrives), a sorted
  set scored by due time in ms
- ``bookgen:rl:<channel>:m:<key>``, ``...:h:<key>``  the rate limiter's per-minute and
  per-hour windows of one recipient
- ``bookgen:endpoints``, ``bookgen:subscribers``  registered endpoints and subscriber
  profiles (hashes: id -> JSON), each with its audit stream ``...:changes``
- ``bookgen:endpoints:health``  each failing endpoint's window (since, count), for auto-disable
- ``bookgen:events:idem:<event id>``  the first stream id of an emitted event id, expiring
  after IDEMPOTENCY_WINDOW; ``bookgen:events:held`` (ids scored by due time in ms) and
  ``bookgen:events:held:events`` (id -> event JSON): events waiting for their ``deliver_at``.
  All three are named after the event stream, so they share its hash tag (one slot).
- ``bookgen:meta``  the deployment's layout (``partitions``: STREAM_PARTITIONS at first start)

**Partitioned** (``STREAM_PARTITIONS`` > 1, or any Redis Cluster): every key of one
partition carries that partition's hash tag (:func:`~bookgen_events.partitions.partition_tag`)
right after the prefix, ``bookgen:{<tag>}:events``, ``bookgen:{<tag>}:deliveries``,
``bookgen:{<tag>}:dlq:<channel>``, ``bookgen:{<tag>}:scheduled:<channel>``, and the keys named
after the event stream (idempotency, held events) with them. **In a cluster** the other
groups get a tag of their own: ``bookgen:{registry}:endpoints`` (``:changes``, ``:health``),
``bookgen:{registry}:subscribers`` (``:changes``), ``bookgen:rl:{<channel>:<key>}:m`` and
``:h``.

Every command or script that touches several keys, and why they share a slot:

- ``commit.lua``: deliveries, dlq, scheduled of the channel and the stream acked, all of one
  partition (the consumer of a partition commits into that partition's keys).
- ``emit_many.lua`` and the held events' scripts (``move_due.lua``, ``cancel_event.lua``): the
  event stream, the two held keys and the idempotency keys, all named after the partition's
  event stream.
- ``claim_due.lua``: one key (the scheduled set of a channel in a partition).
- ``rate_limit.lua``: the minute and hour windows of one recipient (one tag per recipient).
- ``endpoint_failure.lua``: one key (the health hash).
- the registries' MULTI (hash + its audit stream): ``{registry}``.
- the dead letters' redrive MULTI (scheduled set + dlq stream of one channel): one partition.
- XREADGROUP and XREAD name one stream per call; no command spans partitions (a reader per
  partition).
"""

from __future__ import annotations

from .partitions import partition_tag


class StreamNames:
    """Every Redis key of one deployment (one partition of it), derived from ``STREAM_PREFIX``.

    ``partition``/``partitions`` pick the partition and ``cluster`` the cluster layout; the
    defaults give the plain names above.
    """

    def __init__(
        self,
        prefix: str = "bookgen",
        *,
        partition: int = 0,
        partitions: int = 1,
        cluster: bool = False,
    ) -> None:
        self.prefix = prefix
        self.partition = partition
        self.partitions = partitions
        self.cluster = cluster
        tagged = cluster or partitions > 1
        #: The base of this partition's keys (``bookgen`` or ``bookgen:{<tag>}``).
        self.base = f"{prefix}:{{{partition_tag(partition, partitions)}}}" if tagged else prefix
        registry = f"{prefix}:{{registry}}" if cluster else prefix
        self.events = f"{self.base}:events"
        self.deliveries = f"{self.base}:deliveries"
        self.endpoints = f"{registry}:endpoints"
        self.subscribers = f"{registry}:subscribers"
        self.endpoint_health = f"{registry}:endpoints:health"
        self.meta = f"{prefix}:meta"

    def of_partition(self, partition: int) -> StreamNames:
        """The names of another partition of the same deployment."""
        return StreamNames(
            self.prefix, partition=partition, partitions=self.partitions, cluster=self.cluster
        )

    @staticmethod
    def changes(registry: str) -> str:
        """The audit stream of a registry hash (``endpoints``, ``subscribers``)."""
        return f"{registry}:changes"

    def idempotency(self, event_id: str) -> str:
        """The first stream id of ``event_id`` (see :mod:`~bookgen_events.idempotency`)."""
        return f"{self.events}:idem:{event_id}"

    @property
    def held(self) -> tuple[str, str]:
        """Events waiting for their ``deliver_at``: the due-time set and the events by id."""
        return f"{self.events}:held", f"{self.events}:held:events"

    def dlq(self, channel: str) -> str:
        return f"{self.base}:dlq:{channel}"

    def scheduled(self, channel: str) -> str:
        return f"{self.base}:scheduled:{channel}"

    def rate_limit(self, channel: str, key: str) -> list[str]:
        """The per-minute and per-hour windows of ``key`` (a recipient) on ``channel``."""
        if self.cluster:
            base = f"{self.prefix}:rl:{{{channel}:{key}}}"
            return [f"{base}:m", f"{base}:h"]
        base = f"{self.prefix}:rl:{channel}"
        return [f"{base}:m:{key}", f"{base}:h:{key}"]
