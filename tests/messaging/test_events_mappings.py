"""Mappings from DIP messages (as dipsim generates them) to normalised events, per interface."""

from __future__ import annotations

import copy
import datetime as dt
import random

import pytest

from dipsim import messages as dip
from messaging.events import mappings
from messaging.events.mappings import EventType, MappingError

SUPPLIER = ("1000000001", "ACME")
PROVIDER = ("1000000002", "GLBX")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(21)


@pytest.fixture
def mpan(rng: random.Random) -> str:
    return dip.make_mpan(rng)


def derive(payload: dict, version: int | None = None) -> tuple[mappings.Mapping, list]:
    mapping = mappings.mapping_for(mappings.interface_of(payload), version=version)
    assert mapping is not None
    return mapping, mapping.derive(payload)


def test_if021_makes_one_consumption_event_per_settlement_day_with_its_periods(rng, mpan):
    payload = dip.if021(sender="1000000002", mpan=mpan, day=dt.date(2026, 11, 1), rng=rng, days=2)
    mapping, events = derive(payload, version=1)
    assert mapping.label == "consumption@1"
    assert [e.type for e in events] == [EventType.CONSUMPTION_RECORDED] * 2
    first = events[0].payload
    assert events[0].subject == mpan
    assert first["mpan"] == mpan
    assert first["mqid"] == "AI"
    assert first["settlement_day"] == "2026-11-01T00:00:00+00:00"
    assert events[1].payload["settlement_day"] == "2026-11-02T00:00:00+00:00"
    assert len(first["periods"]) == 48
    wire = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]
    assert first["periods"][0]["kwh"] == wire["consumptionPeriods"][0]["v"]
    assert first["periods"][0]["period_end"] == wire["consumptionPeriods"][0]["sp"]
    assert first["issuing_data_service"] == "1000000002"
    assert first["interface_id"] == "IF-021"
    assert first["event_code"] == "ActivePower"


def test_consumption_v2_numbers_periods_and_totals_the_day(rng, mpan):
    payload = dip.if021(sender="1000000002", mpan=mpan, day=dt.date(2026, 3, 29), rng=rng)
    mapping, [event] = derive(payload)
    assert mapping.label == "consumption@2"  # the newest is the default
    data = event.payload
    wire = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]
    from decimal import Decimal

    expected = sum(Decimal(p["v"]) for p in wire["consumptionPeriods"])
    assert data["total_kwh"] == f"{expected:.3f}"
    assert [p["period"] for p in data["periods"]] == list(range(1, 49))
    assert data["period_count"] == 48
    assert data["settlement_date"] == "2026-03-29"


def test_consumption_v2_names_a_value_that_is_not_a_number(rng, mpan):
    payload = dip.if021(sender="1000000002", mpan=mpan, day=dt.date(2026, 3, 29), rng=rng)
    payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]["consumptionPeriods"][3][
        "v"
    ] = "lots"
    with pytest.raises(MappingError, match=r"consumptionPeriods\[3\]\.v is not a number"):
        derive(payload)


def test_if001_change_of_supplier_names_both_suppliers(mpan):
    payload = dip.if001(
        sender="1000000099",
        mpan=mpan,
        incoming=SUPPLIER,
        outgoing=("1000000077", "OLDS"),
        effective="2026-12-01T00:00:00+00:00",
    )
    mapping, [event] = derive(payload)
    assert mapping.label == "registration@1"
    assert event.type == EventType.REGISTRATION_CHANGED
    assert event.payload["change"] == "change_of_supplier"
    assert event.payload["incoming_supplier"] == {"dip_id": "1000000001", "mpid": "ACME"}
    assert event.payload["outgoing_supplier"]["mpid"] == "OLDS"
    assert event.payload["effective_from"] == "2026-12-01T00:00:00+00:00"


def test_if001_initial_registration_has_no_outgoing_supplier(mpan):
    payload = dip.if001(
        sender="1000000099", mpan=mpan, incoming=SUPPLIER, effective="2026-12-01T00:00:00+00:00"
    )
    _, [event] = derive(payload)
    assert event.payload["change"] == "initial"
    assert event.payload["outgoing_supplier"] is None


@pytest.mark.parametrize(
    ("interface_id", "service", "stage", "outcome"),
    [
        ("IF-031", "MS", "requested", None),
        ("IF-032", "MS", "request_acknowledged", None),
        ("IF-033", "DS", "offered_to_provider", None),
        ("IF-034", "DS", "provider_responded", None),
        ("IF-035", "MS", "decided", "accepted"),
        ("IF-036", "DS", "active", "active"),
        ("IF-036", "MS", "active", "active"),
    ],
)
def test_the_appointment_chain_maps_each_stage(mpan, interface_id, service, stage, outcome):
    payload = dip.appointment(
        interface_id,
        service=service,
        sender="1000000099",
        role="REGS",
        mpan=mpan,
        supplier=SUPPLIER,
        provider=PROVIDER,
        effective="2026-12-01T00:00:00+00:00",
    )
    mapping, [event] = derive(payload)
    assert mapping.label == "appointment@1"
    assert event.type == EventType.APPOINTMENT_CHANGED
    assert event.payload["service"] == service
    assert event.payload["stage"] == stage
    assert event.payload["outcome"] == outcome
    assert event.payload["provider"] == {"dip_id": "1000000002", "mpid": "GLBX"}
    assert event.payload["effective_from"] == "2026-12-01T00:00:00+00:00"
    if interface_id in {"IF-033", "IF-034", "IF-035", "IF-036"}:
        assert event.payload["requesting_supplier"] == {"dip_id": "1000000001", "mpid": "ACME"}


def test_a_rejected_appointment_carries_the_response_codes(mpan):
    payload = dip.appointment(
        "IF-035",
        service="DS",
        sender="1000000099",
        role="REGS",
        mpan=mpan,
        supplier=SUPPLIER,
        provider=PROVIDER,
        effective="2026-12-01T00:00:00+00:00",
        event="[DSAppRejected]",
        response=("R", "SP004"),
    )
    _, [event] = derive(payload)
    assert event.payload["outcome"] == "rejected"
    assert (event.payload["response_code"], event.payload["response_reason"]) == ("R", "SP004")


def test_if041_makes_a_reading_event(rng, mpan):
    read_at = dt.datetime(2026, 11, 1, 9, 30, tzinfo=dt.UTC)
    payload = dip.if041(sender="1000000002", role="SDS", mpan=mpan, read_at=read_at, rng=rng)
    mapping, [event] = derive(payload)
    assert mapping.label == "reading@1"
    assert event.type == EventType.READING_RECORDED
    [reading] = event.payload["readings"]
    wire = payload["CustomBlock"]["B064List"][0]
    assert reading["meter_id"] == wire["meterID"]
    assert reading["register_reading"] == wire["cumulativeRegisterReading"]
    assert event.payload["reading_type"] == "ReadingRemote"


def test_interfaces_without_a_mapping_make_no_event(mpan):
    payload = dip.simple(
        "IF-007", sender="1", role="MSS", mpan=mpan, effective="2026-12-01T00:00:00+00:00"
    )
    assert mappings.mapping_for(mappings.interface_of(payload)) is None


def test_a_message_missing_what_the_mapping_needs_names_the_path(rng, mpan):
    payload = dip.if021(sender="1000000002", mpan=mpan, day=dt.date(2026, 11, 1), rng=rng)
    broken = copy.deepcopy(payload)
    del broken["CommonBlock"]["M0"]
    with pytest.raises(MappingError, match=r"CommonBlock\.M0"):
        derive(broken)
    with pytest.raises(MappingError, match="no mapping version 9"):
        mappings.mapping_for("IF-021", version=9)


def test_mappings_are_pure(rng, mpan):
    payload = dip.if021(sender="1000000002", mpan=mpan, day=dt.date(2026, 11, 1), rng=rng)
    before = copy.deepcopy(payload)
    first = derive(payload)[1]
    assert derive(payload)[1] == first
    assert payload == before
