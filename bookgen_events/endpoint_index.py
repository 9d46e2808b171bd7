"""A dispatcher's view of the endpoint registry: enabled endpoints by event type, kept current
(:class:`~bookgen_events.registry_view.RegistryView`). Routing an event is a dictionary
lookup by its type, then by its job and its user: its cost grows with the endpoints it
reaches, not with all that exist, nor with all that want its type.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .endpoints import Endpoint, EndpointNotFound, EndpointRegistry, endpoint_recipient
from .events import WEBHOOK_EVENT_NAMES, Event, EventType
from .registry_view import RegistryView


class EndpointIndex(RegistryView[Endpoint]):
    """Enabled endpoints by event type; :meth:`follow` keeps it current."""

    def __init__(self, registry: EndpointRegistry) -> None:
        super().__init__(registry.store)
        self.registry = registry
        self._routes: dict[tuple[EventType, str], _Route] = {}

    async def read(self, record_id: str) -> Endpoint | None:
        try:
            return await self.registry.get(record_id)
        except EndpointNotFound:
            return None

    async def read_all(self) -> dict[str, Endpoint]:
        return {e.id: e for e in await self.registry.all()}

    def recipients(self, event: Event, endpoint_type: str) -> list[str]:
        """The recipients (:func:`endpoint_recipient`) of the enabled endpoints of
        ``endpoint_type`` that want ``event``: what a channel delivers it to."""
        route = self._routes.get((event.type, endpoint_type))
        if route is None:
            return []
        found = list(route.everyone)
        job_id, user_id = event.job_id, event.user_id
        if job_id is not None and route.by_job:
            found += route.by_job.get(job_id, ())
            if route.by_job_and_user and user_id is not None:
                found += [r for e, r in route.by_job_and_user.get(job_id, ()) if e.matches(event)]
        if user_id is not None and route.by_user:
            found += route.by_user.get(user_id, ())
        return found

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint as this view knows it now (None once deleted)."""
        return self.records.get(endpoint_id)

    def reindex(self) -> None:
        by_type: dict[EventType, list[Endpoint]] = defaultdict(list)
        names = {name: kind for kind, name in WEBHOOK_EVENT_NAMES.items()}
        for endpoint in self.records.values():
            if endpoint.disabled:
                continue
            kinds = (
                list(WEBHOOK_EVENT_NAMES)
                if endpoint.event_types is None
                else [names[n] for n in endpoint.event_types]
            )
            for kind in kinds:
                by_type[kind].append(endpoint)
        routes: dict[tuple[EventType, str], _Route] = {}
        for kind, found in by_type.items():
            for endpoint in found:
                route = routes.setdefault((kind, endpoint.type), _Route())
                route.add(endpoint, endpoint_recipient(endpoint))
        self._routes = routes


@dataclass(slots=True)
class _Route:
    """The endpoints of one (event type, endpoint type), ready to route: the recipients of
    those without filters; of those filtered by job alone, by job id; of those filtered by
    user alone, by user id; those filtered by both, by job id (the user checked per event).

    Routing one event against the 100 of 10,000 endpoints that want its type, half of them
    filtered by job (bench/routing.py): building each recipient per event ~30 us; checking
    each filtered endpoint's filters 11-30 us; these lookups 0.8-1.2 us.
    """

    everyone: list[str] = field(default_factory=list)
    by_job: dict[str, list[str]] = field(default_factory=dict)
    by_user: dict[str, list[str]] = field(default_factory=dict)
    by_job_and_user: dict[str, list[tuple[Endpoint, str]]] = field(default_factory=dict)

    def add(self, endpoint: Endpoint, recipient: str) -> None:
        if endpoint.job_ids is not None and endpoint.user_ids is not None:
            for job_id in set(endpoint.job_ids):
                self.by_job_and_user.setdefault(job_id, []).append((endpoint, recipient))
        elif endpoint.job_ids is not None:
            for job_id in set(endpoint.job_ids):
                self.by_job.setdefault(job_id, []).append(recipient)
        elif endpoint.user_ids is not None:
            for user_id in set(endpoint.user_ids):
                self.by_user.setdefault(user_id, []).append(recipient)
        else:
            self.everyone.append(recipient)
