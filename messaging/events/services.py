"""Writing normalised events: derive them from DIP messages, publish Busbar's own, re-derive them
with a newer mapping, and owe each one to every endpoint subscribed to its type."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from itertools import chain
from typing import Any, NotRequired, TypedDict

import orjson
import psycopg
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from core.tenancy import tenant_context
from messaging.events import mappings
from messaging.events.models import Event
from messaging.events.tasks import request_delivery_round
from messaging.models import Message
from messaging.store.services import message_bytes, raw_body
from messaging.validation import jsonparse

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


class EventRow(TypedDict):
    """A new event as the insert takes it: one plain dict per event, no model instance (building
    an ``Event`` per event was a fifth of the inbound worker's normalisation in the profile).
    ``uid`` is the text of the event's UUID; ``ord`` is set by the insert."""

    uid: str
    type: str
    subject: str
    mapping: str
    mapping_version: int | None
    source_message_id: int | None
    source: str
    supersedes_id: int | None
    payload: dict[str, Any]
    ord: NotRequired[int]


def _row(
    *,
    uid: uuid.UUID,
    type: str,
    payload: dict[str, Any],
    subject: str = "",
    mapping: str = "",
    mapping_version: int | None = None,
    source_message_id: int | None = None,
    source: str = "",
) -> EventRow:
    # The subject and source are cut to their columns' lengths, as the model's fields are.
    return {
        "uid": str(uid),
        "type": type,
        "subject": subject[:40],
        "mapping": mapping,
        "mapping_version": mapping_version,
        "source_message_id": source_message_id,
        "source": source[:100],
        "supersedes_id": None,
        "payload": payload,
    }


def _derive(
    tenant_id: uuid.UUID, messages: Iterable[tuple[int, dict[str, Any]]], version: int | None
) -> list[EventRow]:
    events, failures = _derive_all(tenant_id, messages, version)
    if failures:
        raise EventMappingError(failures)
    return events


def _derive_all(
    tenant_id: uuid.UUID, messages: Iterable[tuple[int, dict[str, Any]]], version: int | None
) -> tuple[list[EventRow], dict[int, str]]:
    """The events of the messages that map, and why each of the others does not."""
    events: list[EventRow] = []
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
            {
                "uid": str(_derived_uid(tenant_id, message_id, mapping, n)),
                "type": d.type,
                "subject": d.subject[:40],
                "mapping": mapping.name,
                "mapping_version": mapping.version,
                "source_message_id": message_id,
                "source": "",
                "supersedes_id": None,
                "payload": d.payload,
            }
            for n, d in enumerate(derived)
        )
    return events, failures


FEED_LOCK = 0x42555342  # first key of the per-tenant advisory lock that orders the feed


# The new events and what they are owed, in one statement. The rows travel as one JSON
# document: as a parameter array, each payload would be quoted element by element on the client
# (a regular-expression pass per payload, the largest cost of recording in the profile).
INSERT_EVENTS_SQL = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        ord int, uid uuid, type text, subject text, mapping text, mapping_version smallint,
        source_message_id bigint, source text, supersedes_id bigint, payload jsonb)
), fresh AS (
    SELECT i.*, (SELECT coalesce(max(position), 0) FROM messaging_event
                 WHERE tenant_id = %(tenant)s) + row_number() OVER (ORDER BY i.ord) AS position
    FROM input i
    WHERE NOT EXISTS (
        SELECT 1 FROM messaging_event e WHERE e.tenant_id = %(tenant)s AND e.uid = i.uid)
), inserted AS (
    INSERT INTO messaging_event (tenant_id, uid, type, subject, mapping, mapping_version,
        source_message_id, source, supersedes_id, payload, position, created_at)
    SELECT %(tenant)s, uid, type, subject, mapping, mapping_version, source_message_id, source,
        supersedes_id, payload, position, now()
    FROM fresh ORDER BY position
    RETURNING id, type, position
), owed AS (
    INSERT INTO messaging_delivery (tenant_id, event_id, endpoint_id, state, attempts,
        next_attempt_at, created_at, last_error)
    SELECT %(tenant)s, i.id, e.id, 'pending', 0, now(), now(), ''
    FROM inserted i JOIN tenants_downstreamendpoint e
      ON e.tenant_id = %(tenant)s AND e.enabled
     AND (i.type = ANY(e.event_types) OR %(wildcard)s = ANY(e.event_types))
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT id, position, (SELECT count(*) FROM owed) FROM inserted
"""


_PLAIN = frozenset({str, int, bool, float, type(None), dict, list})


def _plain_and_finite(value: Any) -> bool:
    """Whether ``value`` holds only JSON's own types (exact ``dict``, ``list``, ``str``, ``int``,
    ``bool``, ``None``) and finite ``float``s: then orjson writes the document ``json`` writes
    (numbers may be spelled differently, ``1e-07`` and ``1e-7``, but PostgreSQL reads the same
    number). Walked a level at a time in C-level passes (``map``, ``chain``): a round's events
    hold about 150,000 values, most of them the periods' leaves (about 13 us per event, against
    about 35 us saved by encoding with orjson)."""
    level = [value]
    while level:
        types = set(map(type, level))
        if not types <= _PLAIN:
            return False
        if float in types and not all(math.isfinite(v) for v in level if type(v) is float):
            return False
        if types == {dict}:
            level = list(chain.from_iterable(map(dict.values, level)))
        elif types == {list}:
            level = list(chain.from_iterable(level))
        elif dict in types or list in types:
            level = [
                *chain.from_iterable(v.values() for v in level if type(v) is dict),
                *chain.from_iterable(v for v in level if type(v) is list),
            ]
        else:
            return True
    return True


def _document(rows: list[EventRow]) -> str:
    """The rows as one JSON document, exactly as ``DjangoJSONEncoder`` writes them (the
    standard library's encoder: a payload may hold dates or ``Decimal``s).

    orjson encodes a round of events about ten times faster, but not the same document for every
    value: it writes ``NaN`` and the infinities as ``null`` (the standard encoder writes ``NaN``,
    which PostgreSQL refuses, so such an event is refused as before instead of stored with a
    null), refuses integers beyond 64 bits and keys that are not strings (``TypeError``), and
    writes dates, ``Decimal``s and other types its own way. So it is used only for documents of
    JSON's own types and finite floats, and the standard encoder for everything else."""
    if _plain_and_finite(rows):
        try:
            return orjson.dumps(rows).decode()
        except TypeError:
            pass  # an integer beyond 64 bits, a key that is not a string: as before
    return DjangoJSONEncoder(separators=(",", ":")).encode(rows)


def _insert(tenant_id: uuid.UUID, events: list[EventRow]) -> list[int]:
    """Insert the events that do not exist yet (by uid) at the end of the tenant's feed, each
    owed to every enabled endpoint subscribed to its type; return the ids of those inserted, in
    feed order. When anything is owed, a delivery round is asked for once the transaction
    commits.

    Positions are handed out under a per-tenant advisory lock held until the caller's transaction
    ends, so one tenant's event writers take turns: a position is never visible before a smaller
    one, and a reader's cursor cannot skip an event committed late. Other tenants never wait.
    """
    if not events:
        return []
    unique: dict[str, EventRow] = {}
    for event in events:
        unique.setdefault(event["uid"], event)
    rows = list(unique.values())
    for n, row in enumerate(rows):
        row["ord"] = n
    document = _document(rows)
    with connection.cursor() as cursor:
        # Under the lock nobody else can insert these uids: the NOT EXISTS settles concurrent
        # recording of the same message. The lock is its own statement: the insert's snapshot,
        # which reads the feed's last position, must be taken once the lock is held (one taken
        # before waiting for it would miss the positions of the writer waited for).
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [FEED_LOCK, str(tenant_id)]
        )
    # The document is a bound parameter (server-side binding, a cursor of its own on the same
    # connection and transaction): Django's client-side cursor quoted its 3 MB into the
    # statement's text, about 9 us of CPU per event. Errors are Django's, as from its cursors.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
        raw.execute(
            INSERT_EVENTS_SQL,
            {"rows": document, "tenant": tenant_id, "wildcard": WILDCARD},
            prepare=False,
        )
        inserted = raw.fetchall()
    if inserted and inserted[0][2]:
        request_delivery_round(tenant_id)
    return [row[0] for row in sorted(inserted, key=lambda row: row[1])]


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
        return _insert(tenant, _derive(tenant, messages, None))


def derive_events(
    *, tenant_id: uuid.UUID | str, messages: list[tuple[int, dict[str, Any]]]
) -> tuple[list[EventRow], dict[int, str]]:
    """What ``record_events`` derives, without the database: the events of the messages that map
    (newest mapping per interface) and, by message id, why each of the others does not. Store
    them with :func:`record_derived_events`."""
    return _derive_all(uuid.UUID(str(tenant_id)), messages, None)


@transaction.atomic
def record_derived_events(*, tenant_id: uuid.UUID | str, events: list[EventRow]) -> list[int]:
    """Store events from :func:`derive_events` (as ``record_events`` does); returns the ids of
    those created now.

    This takes the tenant's feed lock, which is held until the caller's transaction ends and makes
    every other writer of the tenant's feed wait. Take it before any state move of the same
    transaction (``store.transition`` locks the rollup counters' rows), as every other writer does:
    the delivery worker holds an endpoint's row while it moves messages, and the deliveries
    inserted here need that row, so the other order can deadlock.
    """
    with tenant_context(tenant_id) as tenant:
        return _insert(tenant, events)


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
            tenant, [_row(uid=uid, type=type, subject=subject, source=source, payload=payload)]
        )
        return created[0] if created else Event.objects.get(uid=uid).id


@transaction.atomic
def publish_events(
    *,
    tenant_id: uuid.UUID | str,
    type: str,
    events: Iterable[tuple[str, str, str, dict[str, Any]]],
) -> int:
    """Publish many of Busbar's own events of one ``type`` at once: ``(subject, source,
    dedupe_key, payload)`` each, as :func:`publish_event` would one by one, with one feed lock and
    one delivery round asked for them all (the outbound worker moves a whole batch at a time). Returns how
    many were new. Raises ValueError for an unknown type."""
    if type not in mappings.EventType.ALL:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(mappings.EventType.ALL)}")
    with tenant_context(tenant_id) as tenant:
        rows = [
            _row(
                uid=uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/publish/{type}/{dedupe_key}")
                if dedupe_key
                else uuid.uuid4(),
                type=type,
                subject=subject,
                source=source,
                payload=payload,
            )
            for subject, source, dedupe_key, payload in events
        ]
        return len(_insert(tenant, rows))


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
        for stored in Event.objects.filter(source_message_id__in=[m for m, _ in messages]).order_by(
            "id"
        ):
            previous.setdefault((stored.source_message_id, stored.mapping), []).append(stored)
        position: dict[int, int] = {}
        for event in derived:
            message_id = event["source_message_id"]
            assert message_id is not None
            n = position[message_id] = position.get(message_id, -1) + 1
            older = [
                e
                for e in previous.get((message_id, event["mapping"]), [])
                if (e.mapping_version or 0) < (event["mapping_version"] or 0)
            ]
            newest_older = max((e.mapping_version or 0 for e in older), default=None)
            generation = [e for e in older if e.mapping_version == newest_older]
            if n < len(generation):
                event["supersedes_id"] = generation[n].id
        return _insert(tenant, derived)


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
            data = jsonparse.loads(message_bytes(message, body=bodies.get(message.raw_id or -1)))
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
