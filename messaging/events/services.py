"""Writing normalised events: derive them from DIP messages, publish Busbar's own, re-derive them
with a newer mapping, and owe each one to every endpoint subscribed to its type."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.tenancy import tenant_context
from messaging.events import mappings
from messaging.events.models import Delivery, Event
from messaging.events.tasks import deliver_due_task
from messaging.models import Message
from messaging.store.services import message_bytes, raw_body
from tenants.models import DownstreamEndpoint

# Derived events' ids are uuid5 under this namespace, so the same message, mapping and version
# always make the same ids (recording twice makes nothing twice).
EVENT_NAMESPACE = uuid.UUID("6f1d4c1e-5b52-4d0b-9a55-2d1f7e0c9b21")
WILDCARD = "*"


class EventMappingError(ValueError):
    """Some messages could not be mapped; ``failures`` maps each message id to the reason."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = failures
        described = "; ".join(f"message {mid}: {why}" for mid, why in failures.items())
        super().__init__(f"no events recorded: {described}")


def _derived_uid(
    tenant_id: uuid.UUID, message_id: int, mapping: mappings.Mapping, n: int
) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"{tenant_id}/{message_id}/{mapping.label}/{n}")


def _derive(
    tenant_id: uuid.UUID, messages: Iterable[tuple[int, dict[str, Any]]], version: int | None
) -> list[Event]:
    events: list[Event] = []
    failures: dict[int, str] = {}
    for message_id, payload in messages:
        try:
            mapping = mappings.mapping_for(mappings.interface_of(payload), version=version)
            if mapping is None:
                continue
            derived = mapping.derive(payload)
        except mappings.MappingError as exc:
            failures[message_id] = str(exc)
            continue
        events.extend(
            Event(
                tenant_id=tenant_id,
                uid=_derived_uid(tenant_id, message_id, mapping, n),
                type=d.type,
                subject=d.subject[:40],
                mapping=mapping.name,
                mapping_version=mapping.version,
                source_message_id=message_id,
                payload=d.payload,
            )
            for n, d in enumerate(derived)
        )
    if failures:
        raise EventMappingError(failures)
    return events


FEED_LOCK = 0x42555342  # first key of the per-tenant advisory lock that orders the feed


def _insert(tenant_id: uuid.UUID, events: list[Event]) -> list[Event]:
    """Insert the events that do not exist yet (by uid) at the end of the tenant's feed; return
    those inserted, with their ids.

    Positions are handed out under a per-tenant advisory lock held until the caller's transaction
    ends, so one tenant's event writers take turns: a position is never visible before a smaller
    one, and a reader's cursor cannot skip an event committed late. Other tenants never wait.
    """
    if not events:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [FEED_LOCK, str(tenant_id)]
        )
        cursor.execute(
            "SELECT coalesce(max(position), 0) FROM messaging_event WHERE tenant_id = %s",
            [tenant_id],
        )
        last = cursor.fetchone()[0]
    # Under the lock nobody else can insert these uids: checking here settles concurrent
    # recording of the same message.
    existing = set(
        Event.objects.filter(uid__in=[e.uid for e in events]).values_list("uid", flat=True)
    )
    fresh: list[Event] = []
    for event in events:
        if event.uid not in existing:
            existing.add(event.uid)
            event.position = last + len(fresh) + 1
            fresh.append(event)
    return Event.objects.bulk_create(fresh, batch_size=1000)


def _fan_out(tenant_id: uuid.UUID, events: list[Event]) -> int:
    """Owe each event to every enabled endpoint subscribed to its type; enqueue on commit."""
    if not events:
        return 0
    endpoints = list(DownstreamEndpoint.objects.filter(enabled=True).only("id", "event_types"))
    now = timezone.now()
    rows = [
        Delivery(
            tenant_id=tenant_id, event_id=event.id, endpoint_id=endpoint.id, next_attempt_at=now
        )
        for event in events
        for endpoint in endpoints
        if event.type in endpoint.event_types or WILDCARD in endpoint.event_types
    ]
    Delivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    if rows:
        deliver_due_task.delay_on_commit(str(tenant_id))
    return len(rows)


@transaction.atomic
def record_events(
    *, tenant_id: uuid.UUID | str, messages: list[tuple[int, dict[str, Any]]]
) -> list[int]:
    """Derive and store the events of validated DIP messages, and owe them downstream.

    ``messages`` are ``(messaging_message id, payload)`` with the payload as on the wire. Each
    message goes through the newest mapping for its interface; interfaces without a mapping make
    no event. Idempotent: a message recorded again makes no new event or delivery. Returns the ids
    of the events created now. Raises EventMappingError (naming each message) and writes nothing
    when any message cannot be mapped. Delivery is enqueued when the transaction commits.
    """
    with tenant_context(tenant_id) as tenant:
        created = _insert(tenant, _derive(tenant, messages, None))
        _fan_out(tenant, created)
        return [e.id for e in created]


@transaction.atomic
def publish_event(
    *,
    tenant_id: uuid.UUID | str,
    type: str,
    payload: dict[str, Any],
    subject: str = "",
    source: str = "",
    dedupe_key: str = "",
) -> int:
    """Publish one of Busbar's own events (an outbound message's state change, say) to the
    tenant's systems, through the same feed and signed webhooks as inbound events.

    ``source`` records where it came from (``"outbound:<message id>"``). With ``dedupe_key`` the
    event's id is derived from it, so publishing the same change twice publishes it once. Returns
    the event's id. Raises ValueError for an unknown type.
    """
    if type not in mappings.EventType.ALL:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(mappings.EventType.ALL)}")
    with tenant_context(tenant_id) as tenant:
        uid = (
            uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/publish/{type}/{dedupe_key}")
            if dedupe_key
            else uuid.uuid4()
        )
        created = _insert(
            tenant,
            [
                Event(
                    tenant_id=tenant,
                    uid=uid,
                    type=type,
                    subject=subject[:40],
                    source=source[:100],
                    payload=payload,
                )
            ],
        )
        _fan_out(tenant, created)
        return created[0].id if created else Event.objects.get(uid=uid).id


@transaction.atomic
def publish_events(
    *,
    tenant_id: uuid.UUID | str,
    type: str,
    events: Iterable[tuple[str, str, str, dict[str, Any]]],
) -> int:
    """Publish many of Busbar's own events of one ``type`` at once: ``(subject, source,
    dedupe_key, payload)`` each, as :func:`publish_event` would one by one, with one feed lock and
    one fan-out for them all (the outbound worker moves a whole batch at a time). Returns how
    many were new. Raises ValueError for an unknown type."""
    if type not in mappings.EventType.ALL:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(mappings.EventType.ALL)}")
    with tenant_context(tenant_id) as tenant:
        rows = [
            Event(
                tenant_id=tenant,
                uid=uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/publish/{type}/{dedupe_key}")
                if dedupe_key
                else uuid.uuid4(),
                type=type,
                subject=subject[:40],
                source=source[:100],
                payload=payload,
            )
            for subject, source, dedupe_key, payload in events
        ]
        created = _insert(tenant, rows)
        _fan_out(tenant, created)
        return len(created)


@transaction.atomic
def rederive_events(
    *,
    tenant_id: uuid.UUID | str,
    messages: list[tuple[int, dict[str, Any]]],
    version: int | None = None,
) -> list[int]:
    """Derive the events of already-recorded messages again with a newer mapping (the newest, or
    ``version``), keeping both generations: each new event ``supersedes`` the event at the same
    position that the message's previous mapping version made. The new events are delivered like
    any other (consumers see ``supersedes`` in them). Returns the ids created now; running it
    twice with the same version creates nothing the second time.
    """
    with tenant_context(tenant_id) as tenant:
        derived = _derive(tenant, messages, version)
        previous: dict[tuple[int | None, str], list[Event]] = {}
        for event in Event.objects.filter(source_message_id__in=[m for m, _ in messages]).order_by(
            "id"
        ):
            previous.setdefault((event.source_message_id, event.mapping), []).append(event)
        position: dict[int, int] = {}
        for event in derived:
            assert event.source_message_id is not None
            n = position[event.source_message_id] = position.get(event.source_message_id, -1) + 1
            older = [
                e
                for e in previous.get((event.source_message_id, event.mapping), [])
                if (e.mapping_version or 0) < (event.mapping_version or 0)
            ]
            newest_older = max((e.mapping_version or 0 for e in older), default=None)
            generation = [e for e in older if e.mapping_version == newest_older]
            if n < len(generation):
                event.supersedes = generation[n]
        created = _insert(tenant, derived)
        _fan_out(tenant, created)
        return [e.id for e in created]


def stored_payloads(
    *, tenant_id: uuid.UUID | str, message_ids: list[int]
) -> list[tuple[int, dict[str, Any]]]:
    """The payloads of stored inbound messages, read from their exact raw bytes (each message is
    one ``{"payload": {...}}`` element of its delivery). Raises LookupError naming a message that
    is not this tenant's, has no bytes, or whose bytes are not a DIP message."""
    with tenant_context(tenant_id) as tenant:
        rows = {
            m.id: m
            for m in Message.objects.filter(id__in=message_ids).only(
                "tenant_id", "id", "raw_id", "raw_offset", "raw_length"
            )
        }
        bodies: dict[int, bytes] = {}
        found: list[tuple[int, dict[str, Any]]] = []
        for message_id in message_ids:
            message = rows.get(message_id)
            if message is None:
                raise LookupError(f"message {message_id} is not one of this tenant's")
            if message.raw_id is not None and message.raw_id not in bodies:
                bodies[message.raw_id] = raw_body(tenant_id=tenant, raw_id=message.raw_id)
            data = json.loads(message_bytes(message, body=bodies.get(message.raw_id or -1)))
            payload = data.get("payload") if isinstance(data, dict) else None
            if not isinstance(payload, dict):
                raise LookupError(f"message {message_id}'s bytes hold no DIP payload")
            found.append((message_id, payload))
        return found


def rederive_stored_messages(
    *, tenant_id: uuid.UUID | str, message_ids: list[int], version: int | None = None
) -> list[int]:
    """``rederive_events`` for messages in the store, read from their raw bytes."""
    return rederive_events(
        tenant_id=tenant_id,
        messages=stored_payloads(tenant_id=tenant_id, message_ids=message_ids),
        version=version,
    )
