"""Versioned mappings from DIP messages to normalised events.

A mapping reads one DIP message's payload (``{"CommonBlock": ..., "CustomBlock": ...}`` as on the
wire) and returns the events it means for the tenant's own systems, in the tenant's terms rather
than the DIP's block codes. Each mapping has a name and an integer version; every stored event
records both, so a newer version can re-derive events from the same raw message and both
generations stay traceable (``services.rederive_events``).

Mappings are pure functions of the payload: no database, no clock, no randomness, so re-running
one over the same message gives the same events (their ids are derived from the message id, the
mapping and the version, which makes recording idempotent too).

A payload that does not carry what the mapping needs raises ``MappingError`` naming the path;
validation runs first, so this means the message and the mapping disagree, not bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any


class MappingError(ValueError):
    """The payload lacks something the mapping needs; the message names the JSON path."""


class EventType:
    """The event types Busbar publishes; endpoints subscribe to a subset."""

    CONSUMPTION_RECORDED = "consumption.recorded"
    REGISTRATION_CHANGED = "registration.changed"
    APPOINTMENT_CHANGED = "appointment.changed"
    READING_RECORDED = "reading.recorded"
    OUTBOUND_STATE_CHANGED = "outbound.state_changed"

    ALL = (
        CONSUMPTION_RECORDED,
        REGISTRATION_CHANGED,
        APPOINTMENT_CHANGED,
        READING_RECORDED,
        OUTBOUND_STATE_CHANGED,
    )
    LABELS = {
        CONSUMPTION_RECORDED: "Consumption recorded (IF-021)",
        REGISTRATION_CHANGED: "Registration changed (IF-001)",
        APPOINTMENT_CHANGED: "Appointment changed (IF-031 to IF-036)",
        READING_RECORDED: "Reading recorded (IF-041)",
        OUTBOUND_STATE_CHANGED: "Outbound message state changed",
    }


@dataclass(frozen=True)
class Derived:
    """One event a mapping derived: its type, its subject (the MPAN) and its payload."""

    type: str
    subject: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Mapping:
    """A named, versioned function from a DIP payload to events, for some interfaces."""

    name: str
    version: int
    interface_ids: frozenset[str]
    derive: Callable[[dict[str, Any]], list[Derived]] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


# --- reading the wire ---------------------------------------------------------------------------


def _get(payload: dict[str, Any], *path: str) -> Any:
    node: Any = payload
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise MappingError(f"the message has no {'.'.join(path[: i + 1])}")
        node = node[key]
    return node


def _opt(payload: dict[str, Any], *path: str) -> Any:
    try:
        return _get(payload, *path)
    except MappingError:
        return None


def _event_code(payload: dict[str, Any]) -> str:
    """``[ActivePower]`` on the wire, ``ActivePower`` in events."""
    return str(_get(payload, "CommonBlock", "S0", "eventCode")).strip("[]")


def _envelope(payload: dict[str, Any]) -> dict[str, Any]:
    """What every event says about the message it came from."""
    s1 = _opt(payload, "CommonBlock", "S1") or {}
    return {
        "interface_id": _get(payload, "CommonBlock", "S0", "interfaceID"),
        "event_code": _event_code(payload),
        "sender_dip_id": s1.get("senderDIPID"),
        "sender_role": s1.get("senderRoleID"),
        "sender_reference": s1.get("senderUniqueReference"),
        "correlation_id": s1.get("senderCorrelationID"),
        "sent_at": s1.get("senderTimestamp"),
    }


def _mpan(payload: dict[str, Any]) -> str:
    return str(_get(payload, "CommonBlock", "M0", "MPANCore"))


def _decimal(value: Any, path: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise MappingError(f"{path} is not a number: {value!r}") from exc


# --- IF-021: consumption -------------------------------------------------------------------------


def _consumption_days(payload: dict[str, Any]) -> list[dict[str, Any]]:
    days = _get(payload, "CustomBlock", "B900", "settlementDayConsumptionPeriods")
    if not isinstance(days, list):
        raise MappingError("CustomBlock.B900.settlementDayConsumptionPeriods is not a list")
    return days


def _consumption_v1(payload: dict[str, Any]) -> list[Derived]:
    """One event per MPAN, settlement day and measurement quantity, with the periods as sent."""
    return _consumption(payload, numbered=False)


def _consumption_v2(payload: dict[str, Any]) -> list[Derived]:
    """As v1, plus what every consumer computed for itself: the settlement day as a date, each
    period's number within the day (1..46, 48 or 50 on clock-change days, which is why it is not
    inferred from the time), the day's total, and the count of periods."""
    return _consumption(payload, numbered=True)


def _consumption(payload: dict[str, Any], *, numbered: bool) -> list[Derived]:
    # Both versions in one pass over the periods (48 a day): building v2 on top of v1's events
    # copied every period and cost twice as much, on the inbound worker's busiest path.
    mpan = _mpan(payload)
    mqid = _get(payload, "CustomBlock", "B900", "MQID", "measurementQuantityID")
    common = {
        **_envelope(payload),
        "mpan": mpan,
        "mqid": mqid,
        "issuing_data_service": _opt(payload, "CustomBlock", "B044", "issuingDataServiceDIPID"),
    }
    events = []
    for n, day in enumerate(_consumption_days(payload)):
        where = f"CustomBlock.B900.settlementDayConsumptionPeriods[{n}]"
        periods = day.get("consumptionPeriods")
        if not isinstance(periods, list):
            raise MappingError(f"{where}.consumptionPeriods is not a list")
        data = {
            **common,
            "settlement_day": _get(day, "settlementDay", "settlementDayDate"),
            "period_minutes": _opt(day, "settlementDay", "periodDuration"),
        }
        if not numbered:
            data["periods"] = [
                {
                    "period_end": p.get("sp"),
                    "kwh": p.get("v"),
                    "quality": p.get("q"),
                    "estimate_reason": p.get("e"),
                    "reason_code": p.get("arc"),
                }
                for p in periods
            ]
        else:
            rows = [
                {
                    "period": i,
                    "period_end": p.get("sp"),
                    "kwh": p.get("v"),
                    "quality": p.get("q"),
                    "estimate_reason": p.get("e"),
                    "reason_code": p.get("arc"),
                }
                for i, p in enumerate(periods, start=1)
            ]
            data["periods"] = rows
            data["settlement_date"] = str(data["settlement_day"])[:10]
            data["period_count"] = len(rows)
        events.append(Derived(type=EventType.CONSUMPTION_RECORDED, subject=mpan, payload=data))
    if numbered:
        # Totalled once every day has been read, so a message wrong in several ways is named
        # by the same first problem as ever (a day's periods that are no list come first).
        for n, event in enumerate(events):
            where = f"CustomBlock.B900.settlementDayConsumptionPeriods[{n}]"
            event.payload["total_kwh"] = f"{_total_kwh(event.payload['periods'], where):.3f}"
    return events


def _total_kwh(periods: list[dict[str, Any]], where: str) -> Decimal:
    """The exact sum of a day's period values (``Decimal`` of each value as sent, added in order);
    a value that is not a number raises MappingError naming its path."""
    try:
        return sum([Decimal(str(period["kwh"])) for period in periods], Decimal(0))
    except (InvalidOperation, ValueError):
        pass
    # Only for a day with a bad value: the same sum again, naming the first value that fails.
    total = Decimal(0)
    for i, period in enumerate(periods):
        total += _decimal(period["kwh"], f"{where}.consumptionPeriods[{i}].v")
    return total


# --- IF-001: registration ------------------------------------------------------------------------


def _registration_v1(payload: dict[str, Any]) -> list[Derived]:
    mpan = _mpan(payload)
    incoming = _get(payload, "CustomBlock", "B002")
    outgoing = _opt(payload, "CustomBlock", "B003")
    code = _event_code(payload)
    return [
        Derived(
            type=EventType.REGISTRATION_CHANGED,
            subject=mpan,
            payload={
                **_envelope(payload),
                "mpan": mpan,
                "change": "change_of_supplier" if code == "ChangeOfSupplier" else "initial",
                "registration_id": _opt(payload, "CustomBlock", "B013", "CSSRegistrationID"),
                "effective_from": incoming.get("supplierEffectiveFromDate"),
                "incoming_supplier": {
                    "dip_id": incoming.get("incomingSupplierDIPID"),
                    "mpid": incoming.get("incomingSupplierMPID"),
                },
                "outgoing_supplier": (
                    {
                        "dip_id": outgoing.get("outgoingSupplierDIPID"),
                        "mpid": outgoing.get("outgoingSupplierMPID"),
                        "effective_to": outgoing.get("supplierEffectiveToDate"),
                    }
                    if isinstance(outgoing, dict)
                    else None
                ),
                "energisation_status": _opt(payload, "CustomBlock", "B025", "energisationStatus"),
                "gsp_group": _opt(payload, "CommonBlock", "M0", "GSPGroupID"),
            },
        )
    ]


# --- IF-031..IF-036: appointments ---------------------------------------------------------------

# Where the chain stands after each interface (DIP.md section 11).
APPOINTMENT_STAGES = {
    "IF-031": "requested",
    "IF-032": "request_acknowledged",
    "IF-033": "offered_to_provider",
    "IF-034": "provider_responded",
    "IF-035": "decided",
    "IF-036": "active",
}


def _appointment_v1(payload: dict[str, Any]) -> list[Derived]:
    interface_id = _get(payload, "CommonBlock", "S0", "interfaceID")
    code = _event_code(payload)
    custom = _get(payload, "CustomBlock")
    service = "DS" if code.startswith(("DS", "SDS")) else "MS"
    proposed_ms = custom.get("B070") or {}
    proposed_ds = custom.get("B071") or {}
    incoming_ms = custom.get("B014") or {}
    incoming_ds = custom.get("B015") or {}
    if service == "MS":
        provider = {
            "dip_id": proposed_ms.get("proposedMeteringServiceDIPID")
            or incoming_ms.get("incomingMeteringServiceDIPID"),
            "mpid": proposed_ms.get("proposedMeteringServiceMPID")
            or incoming_ms.get("incomingMeteringServiceMPID"),
        }
        effective = proposed_ms.get("proposedMeteringServiceDIPEffectiveFromDate") or (
            incoming_ms.get("incomingMeteringServiceEffectiveFromDate")
        )
        scenario = proposed_ms.get("appointmentScenario") or incoming_ms.get("appointmentScenario")
    else:
        provider = {
            "dip_id": proposed_ds.get("proposedDataServiceDIPID")
            or incoming_ds.get("incomingDataServiceDIPID"),
            "mpid": proposed_ds.get("proposedDataServiceMPID")
            or incoming_ds.get("incomingDataServiceMPID"),
        }
        effective = proposed_ds.get("proposedDataServiceDIPEffectiveFromDate") or (
            incoming_ds.get("incomingDataServiceEffectiveFromDate")
        )
        scenario = proposed_ds.get("appointmentScenario") or incoming_ds.get("appointmentScenario")
    supplier = custom.get("B012") or {}
    response = custom.get("B007") or {}
    r0 = _opt(payload, "CommonBlock", "R0") or {}
    outcome = None
    for word in ("Accepted", "Rejected", "Lapsed", "Active"):
        if code.endswith(word):
            outcome = word.lower()
    mpan = _mpan(payload)
    return [
        Derived(
            type=EventType.APPOINTMENT_CHANGED,
            subject=mpan,
            payload={
                **_envelope(payload),
                "mpan": mpan,
                "service": service,
                "stage": APPOINTMENT_STAGES.get(interface_id, "other"),
                "outcome": outcome,
                "registration_id": _opt(custom, "B013", "CSSRegistrationID"),
                "provider": provider,
                "requesting_supplier": (
                    {
                        "dip_id": supplier.get("serviceProviderAppointmentRequestingSupplierDIPID"),
                        "mpid": supplier.get("serviceProviderAppointmentRequestingSupplierMPID"),
                    }
                    if supplier
                    else None
                ),
                "effective_from": effective,
                "scenario": scenario,
                "response_code": response.get("responseCode") or r0.get("responseCode"),
                "response_reason": response.get("proposedAppointmentResponseCode"),
            },
        )
    ]


# --- IF-041: readings ----------------------------------------------------------------------------


def _reading_v1(payload: dict[str, Any]) -> list[Derived]:
    mpan = _mpan(payload)
    custom = _get(payload, "CustomBlock")
    cumulative = custom.get("B064List") or []
    registers = custom.get("B065List") or []
    if not cumulative and not registers:
        raise MappingError("the message has neither CustomBlock.B064List nor CustomBlock.B065List")
    return [
        Derived(
            type=EventType.READING_RECORDED,
            subject=mpan,
            payload={
                **_envelope(payload),
                "mpan": mpan,
                "reading_type": _event_code(payload),
                "readings": [
                    {
                        "meter_id": r.get("meterID"),
                        "register_reading": r.get("cumulativeRegisterReading"),
                        "read_at": r.get("cumulativeRegisterReadingDateTime"),
                        "method": r.get("readingMethod"),
                        "site_visit_check_code": r.get("siteVisitCheckCode"),
                    }
                    for r in cumulative
                ],
                "configurable_registers": [
                    {
                        "meter_id": r.get("meterID"),
                        "register_id": r.get("configurableRegisterID"),
                        "reading": r.get("configurableRegisterReading"),
                        "read_on": r.get("configurableRegisterReadingDate"),
                    }
                    for r in registers
                ],
            },
        )
    ]


# --- the registry --------------------------------------------------------------------------------

MAPPINGS: tuple[Mapping, ...] = (
    Mapping("consumption", 1, frozenset({"IF-021"}), _consumption_v1),
    Mapping("consumption", 2, frozenset({"IF-021"}), _consumption_v2),
    Mapping("registration", 1, frozenset({"IF-001"}), _registration_v1),
    Mapping(
        "appointment",
        1,
        frozenset({"IF-031", "IF-032", "IF-033", "IF-034", "IF-035", "IF-036"}),
        _appointment_v1,
    ),
    Mapping("reading", 1, frozenset({"IF-041"}), _reading_v1),
)


def get_mapping(name: str, version: int) -> Mapping:
    for mapping in MAPPINGS:
        if mapping.name == name and mapping.version == version:
            return mapping
    raise MappingError(f"no mapping {name}@{version}")


def mapping_for(interface_id: str, *, version: int | None = None) -> Mapping | None:
    """The newest mapping for an interface (or the given version of it); None when Busbar has no
    mapping for the interface (such messages are stored and validated, and make no event)."""
    found = [m for m in MAPPINGS if interface_id in m.interface_ids]
    if version is not None:
        found = [m for m in found if m.version == version]
        if not found:
            raise MappingError(f"no mapping version {version} for {interface_id}")
    return max(found, key=lambda m: m.version) if found else None


def interface_of(payload: dict[str, Any]) -> str:
    if not isinstance(payload, dict):
        raise MappingError("a DIP message payload is a JSON object")
    return str(_get(payload, "CommonBlock", "S0", "interfaceID"))
