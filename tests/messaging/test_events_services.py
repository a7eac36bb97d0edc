"""Recording, publishing and re-deriving events, with lineage, and owing them to endpoints."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DataError

from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.events import endpoints, services, tasks
from messaging.events.mappings import EventType
from messaging.events.models import Delivery, Event
from messaging.events.selectors import event_envelope
from messaging.store import services as store
from tenants.models import Channel, Connection

ALLOW = "127.0.0.1:9"  # nothing is sent in these tests; the endpoints only need to be accepted


@pytest.fixture
def allow_loopback(settings):
    settings.BUSBAR_DOWNSTREAM_ALLOW = ALLOW


def if021(seed: int = 1, days: int = 1) -> dict:
    rng = random.Random(seed)
    return dip.if021(
        sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng, days=days
    )


def if041(seed: int = 2) -> dict:
    rng = random.Random(seed)
    return dip.if041(
        sender="1000000002",
        role="SDS",
        mpan=dip.make_mpan(rng),
        read_at=dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC),
        rng=rng,
    )


def add_endpoint(name: str, types: list[str]) -> int:
    return endpoints.create_endpoint(
        name=name, url=f"http://{ALLOW}/{name}", event_types=types, actor="pytest"
    ).endpoint.id


def test_record_events_stores_each_event_with_its_lineage(world):
    ids = services.record_events(
        tenant_id=world.acme.id, messages=[(101, if021(days=2)), (102, if041())]
    )
    assert len(ids) == 3
    with tenant_context(world.acme.id):
        events = list(Event.objects.order_by("id"))
    assert [(e.type, e.source_message_id, e.mapping, e.mapping_version) for e in events] == [
        (EventType.CONSUMPTION_RECORDED, 101, "consumption", 2),
        (EventType.CONSUMPTION_RECORDED, 101, "consumption", 2),
        (EventType.READING_RECORDED, 102, "reading", 1),
    ]
    assert events[0].tenant_id == world.acme.id
    envelope = event_envelope(events[0])
    assert envelope["id"] == f"evt_{events[0].uid.hex}"
    assert envelope["mapping"] == "consumption@2"
    assert envelope["source_message_id"] == 101


def test_recording_a_message_twice_makes_nothing_twice(world, allow_loopback):
    with tenant_context(world.acme.id):
        add_endpoint("billing", ["*"])
    first = services.record_events(tenant_id=world.acme.id, messages=[(7, if021())])
    again = services.record_events(tenant_id=world.acme.id, messages=[(7, if021())])
    assert len(first) == 1
    assert again == []
    with tenant_context(world.acme.id):
        assert Event.objects.count() == 1
        assert Delivery.objects.count() == 1


def test_events_are_owed_only_to_enabled_endpoints_subscribed_to_their_type(world, allow_loopback):
    with tenant_context(world.acme.id):
        billing = add_endpoint("billing", [EventType.CONSUMPTION_RECORDED])
        meters = add_endpoint("meters", [EventType.READING_RECORDED])
        everything = add_endpoint("lake", ["*"])
        off = add_endpoint("off", ["*"])
        endpoints.set_endpoint_enabled(
            endpoint=endpoints.get_endpoint(endpoint_id=off), enabled=False, actor="pytest"
        )
    services.record_events(tenant_id=world.acme.id, messages=[(1, if021()), (2, if041())])
    with tenant_context(world.acme.id):
        owed = sorted(Delivery.objects.values_list("endpoint_id", "event__type"))
    assert owed == sorted(
        [
            (billing, EventType.CONSUMPTION_RECORDED),
            (meters, EventType.READING_RECORDED),
            (everything, EventType.CONSUMPTION_RECORDED),
            (everything, EventType.READING_RECORDED),
        ]
    )


def test_a_message_that_cannot_be_mapped_fails_the_batch_and_writes_nothing(world):
    broken = if021(seed=3)
    del broken["CustomBlock"]["B900"]
    with pytest.raises(services.EventMappingError, match=r"message 9: .*CustomBlock\.B900") as info:
        services.record_events(tenant_id=world.acme.id, messages=[(8, if021()), (9, broken)])
    assert list(info.value.failures) == [9]
    with tenant_context(world.acme.id):
        assert Event.objects.count() == 0


def test_rederiving_with_a_newer_mapping_keeps_both_generations(world, allow_loopback):
    with tenant_context(world.acme.id):
        add_endpoint("billing", [EventType.CONSUMPTION_RECORDED])
    messages = [(31, if021(seed=5, days=2))]
    old = services.rederive_events(tenant_id=world.acme.id, messages=messages, version=1)
    new = services.rederive_events(tenant_id=world.acme.id, messages=messages)
    assert services.rederive_events(tenant_id=world.acme.id, messages=messages) == []
    with tenant_context(world.acme.id):
        old_events = list(Event.objects.filter(id__in=old).order_by("id"))
        new_events = list(Event.objects.filter(id__in=new).order_by("id"))
        assert [e.mapping_version for e in old_events] == [1, 1]
        assert [e.mapping_version for e in new_events] == [2, 2]
        assert [e.supersedes_id for e in new_events] == [e.id for e in old_events]
        assert all(e.source_message_id == 31 for e in old_events + new_events)
        assert "total_kwh" in new_events[0].payload
        assert "total_kwh" not in old_events[0].payload
        assert event_envelope(new_events[1])["supersedes"] == f"evt_{old_events[1].uid.hex}"
        # The new generation is delivered like any other event.
        assert Delivery.objects.filter(event__in=new_events).count() == 2


def test_publish_event_for_an_outbound_state_change(world, allow_loopback):
    with tenant_context(world.acme.id):
        add_endpoint("crm", [EventType.OUTBOUND_STATE_CHANGED])
    payload = {"message_id": 55, "from": "sending", "to": "sent"}
    first = services.publish_event(
        tenant_id=world.acme.id,
        type=EventType.OUTBOUND_STATE_CHANGED,
        payload=payload,
        source="outbound:55",
        dedupe_key="55:sent",
    )
    again = services.publish_event(
        tenant_id=world.acme.id,
        type=EventType.OUTBOUND_STATE_CHANGED,
        payload=payload,
        source="outbound:55",
        dedupe_key="55:sent",
    )
    assert first == again
    with tenant_context(world.acme.id):
        event = Event.objects.get()
        assert (event.source, event.payload) == ("outbound:55", payload)
        assert Delivery.objects.filter(event=event).count() == 1
    with pytest.raises(ValueError, match="unknown event type 'nope'"):
        services.publish_event(tenant_id=world.acme.id, type="nope", payload={})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_an_event_with_a_non_finite_number_is_refused_as_before(world, value):
    # The standard encoder writes NaN and the infinities, which PostgreSQL refuses; orjson would
    # write null and store the event with a value its message never had.
    payload = if021(seed=11)
    payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]["consumptionPeriods"][5][
        "e"
    ] = value
    with pytest.raises(DataError, match=r"NaN|Infinity"):
        services.record_events(tenant_id=world.acme.id, messages=[(12, if021()), (13, payload)])
    with tenant_context(world.acme.id):
        assert Event.objects.count() == 0


def test_an_integer_beyond_64_bits_is_stored_exactly(world):
    payload = if021(seed=12)
    periods = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]
    periods["consumptionPeriods"][0]["arc"] = 2**70
    periods["consumptionPeriods"][1]["arc"] = -(2**64)
    (event_id,) = services.record_events(tenant_id=world.acme.id, messages=[(14, payload)])
    with tenant_context(world.acme.id):
        stored = Event.objects.get(id=event_id).payload["periods"]
    assert [stored[0]["reason_code"], stored[1]["reason_code"]] == [2**70, -(2**64)]


def test_a_published_payload_is_encoded_as_django_encodes_it(world):
    # Dates, Decimals and keys that are not strings take the standard encoder's spelling (orjson
    # would write the microseconds and "+00:00", and refuse the others).
    at = dt.datetime(2026, 11, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)
    event_id = services.publish_event(
        tenant_id=world.acme.id,
        type=EventType.OUTBOUND_STATE_CHANGED,
        payload={"at": at, "on": at.date(), "amount": Decimal("1.10"), "by": {7: "x"}},
    )
    with tenant_context(world.acme.id):
        stored = Event.objects.get(id=event_id).payload
    assert stored == {
        "at": "2026-11-01T09:30:15.123Z",
        "on": "2026-11-01",
        "amount": "1.10",
        "by": {"7": "x"},
    }


def test_the_events_document_reads_as_the_standard_encoders(world):
    payloads = [(n, if021(seed=n, days=2)) for n in range(20, 30)]
    rows, failures = services.derive_events(tenant_id=world.acme.id, messages=payloads)
    assert not failures
    rows[0]["payload"]["small"] = 1e-7
    rows[0]["payload"]["large"] = [1e300, -0.0, 2**63, True, None]
    document = services._document(rows)
    assert "1e-7" in document  # orjson's spelling: this document took the fast path
    assert json.loads(document) == json.loads(DjangoJSONEncoder().encode(rows))


def test_one_tenants_events_are_invisible_to_another(world):
    services.record_events(tenant_id=world.acme.id, messages=[(1, if021())])
    with tenant_context(world.globex.id):
        assert Event.objects.count() == 0


def test_messages_in_the_store_are_rederived_from_their_raw_bytes(world):
    """The lineage end to end: raw delivery -> message row -> mapping version -> events."""
    payloads = [if021(seed=11), if041(seed=12)]
    parts, facts, position = [], [], 1
    for n, payload in enumerate(payloads):
        item = json.dumps({"payload": payload}).encode()
        facts.append(
            store.InboundMessageFacts(
                offset=position,
                length=len(item),
                sha256=hashlib.sha256(item).digest(),
                transaction_id=f"T-{n}",
                interface_id=payload["CommonBlock"]["S0"]["interfaceID"],
            )
        )
        parts.append(item)
        position += len(item) + 1
    with tenant_context(world.acme.id):
        connection = Connection.objects.get()
        stored = store.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=connection.id,
            channel_id=Channel.objects.get().id,
            body=b"[" + b",".join(parts) + b"]",
            headers={},
            messages=facts,
        )
    ids = stored.message_ids
    first = services.rederive_stored_messages(tenant_id=world.acme.id, message_ids=ids, version=1)
    newer = services.rederive_stored_messages(tenant_id=world.acme.id, message_ids=ids)
    with tenant_context(world.acme.id):
        assert sorted(
            Event.objects.filter(id__in=first).values_list("source_message_id", "mapping")
        ) == sorted([(ids[0], "consumption"), (ids[1], "reading")])
        # Only IF-021 has a second version: one new event, superseding the first generation's.
        [event] = Event.objects.filter(id__in=newer)
        assert (event.mapping_version, event.source_message_id) == (2, ids[0])
        assert event.supersedes.source_message_id == ids[0]
        assert event.payload["mpan"] == payloads[0]["CommonBlock"]["M0"]["MPANCore"]
    with pytest.raises(LookupError, match="not one of this tenant's"):
        services.rederive_stored_messages(tenant_id=world.globex.id, message_ids=ids[:1])


def test_delivery_is_enqueued_once_the_transaction_commits(
    world, allow_loopback, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.deliver_due_task, "delay", lambda *args: sent.append(args))
    with tenant_context(world.acme.id):
        add_endpoint("billing", ["*"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.record_events(tenant_id=world.acme.id, messages=[(1, if021())])
        assert sent == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert sent == [(str(world.acme.id),)]
    # Nothing owed (no endpoint subscribed), nothing enqueued.
    with django_capture_on_commit_callbacks(execute=True):
        services.record_events(tenant_id=world.globex.id, messages=[(2, if021(seed=9))])
    assert sent == [(str(world.acme.id),)]
