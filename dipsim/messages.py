"""Builders of realistic DIP messages (payloads) for the traffic generator, counterparties and tests.

Every builder returns one ``payload`` object (``{"CommonBlock": ..., "CustomBlock": ...}``) that
meets both dipsim's own schemas and the official v2.1.0 schemas (the test suite checks both).
Values are plausible rather than random noise: MPANs carry valid check digits, IF-021 days have
48 UTC half-hour periods ending at the period end, quantities are 9.3 decimal strings.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import secrets
from typing import Any

from dipsim.validation import MPAN_WEIGHTS, dip_timestamp

GSP_FOR_DISTRIBUTOR = {
    "10": "_A", "11": "_B", "12": "_C", "13": "_D", "14": "_E", "15": "_F", "16": "_G",
    "17": "_P", "18": "_N", "19": "_J", "20": "_H", "21": "_K", "22": "_L", "23": "_M",
}  # fmt: skip
_SEQ = itertools.count(1)


def mpan_check_digit(first12: str) -> str:
    return str(sum(int(d) * w for d, w in zip(first12, MPAN_WEIGHTS, strict=True)) % 11 % 10)


def make_mpan(rng: random.Random, distributor: str = "20") -> str:
    """A 13-digit MPAN core with a valid check digit for distributor id ``distributor``."""
    first12 = distributor + "".join(str(rng.randrange(10)) for _ in range(10))
    return first12 + mpan_check_digit(first12)


def break_check_digit(mpan: str) -> str:
    return mpan[:12] + str((int(mpan[12]) + 1) % 10)


def make_sur(interface_id: str, dip_id: str, role: str, day: dt.date | None = None) -> str:
    """A sender unique reference: ``S-<IF>-<DIP ID>-<role>-<yyyymmdd>-<sequence>``."""
    day = day or dt.datetime.now(dt.UTC).date()
    return f"S-{interface_id}-{dip_id}-{role}-{day:%Y%m%d}-{next(_SEQ):x}{secrets.token_hex(6)}"


def midnight(day: dt.date) -> str:
    return f"{day:%Y-%m-%d}T00:00:00+00:00"


def common_block(
    *,
    interface_id: str,
    event_code: str,
    sender: str,
    role: str,
    env: str = "UIT",
    recipients: list[str] | None = None,
    mpan: str | None = None,
    distributor: str | None = None,
    dcp: str | None = None,
    correlation: str | None = None,
    sur: str | None = None,
    now: dt.datetime | None = None,
    r0: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """S0, S1, A0 (primary recipients only: the DIP fills the rest) and M0 when an MPAN is given."""
    now = now or dt.datetime.now(dt.UTC)
    block: dict[str, Any] = {
        "S0": {"interfaceID": interface_id, "schemaVersion": "011", "eventCode": event_code},
        "S1": {
            "environmentTag": env,
            "subText": None,
            "senderUniqueReference": sur or make_sur(interface_id, sender, role, now.date()),
            "senderTimestamp": dip_timestamp(now - dt.timedelta(seconds=1)),
            "senderDIPID": sender,
            "senderRoleID": role,
            "senderCorrelationID": correlation,
            "DIPConnectionProviderID": dcp,
        },
        "A0": {
            "primaryRecipients": list(recipients or []),
            "secondaryRecipients": [],
            "always": [],
        },
    }
    if mpan is not None:
        block["M0"] = {
            "MPANCore": mpan,
            "distributorDIPID": distributor or "2000000020",
            "GSPGroupID": GSP_FOR_DISTRIBUTOR.get(mpan[:2], "_H"),
        }
    if r0 is not None:
        block["R0"] = r0
    return block


def consumption_day(
    day: dt.date, rng: random.Random, *, periods: int = 48, negative: bool = False
) -> dict[str, Any]:
    """One ``settlementDayConsumptionPeriods`` entry: 48 UTC periods, ``sp`` = period end."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    base = rng.uniform(0.05, 0.6)
    consumption = []
    for i in range(periods):
        end = start + dt.timedelta(minutes=30 * (i + 1))
        # A daily shape: low at night, peaks around 08:00 and 18:00 UTC.
        hour = (i + 0.5) / 2
        shape = 1.0 + 0.8 * max(0.0, 1 - abs(hour - 8) / 3) + 1.4 * max(0.0, 1 - abs(hour - 18) / 3)
        value = base * shape * rng.uniform(0.8, 1.2)
        if negative and i == periods // 2:
            value = -value
        consumption.append(
            {"sp": dip_timestamp(end), "v": f"{value:.3f}", "q": "A", "e": None, "arc": None}
        )
    return {
        "settlementDay": {"settlementDayDate": midnight(day), "periodDuration": 30},
        "consumptionPeriods": consumption,
    }


def if021(
    *,
    sender: str,
    role: str = "SDS",
    mpan: str,
    day: dt.date,
    rng: random.Random,
    env: str = "UIT",
    distributor: str | None = None,
    recipients: list[str] | None = None,
    dcp: str | None = None,
    fault: str | None = None,
    days: int = 1,
) -> dict[str, Any]:
    """IF-021 [ActivePower] for one MPAN and ``days`` UTC days starting at ``day``.

    ``fault`` makes a message the DIP accepts but a recipient should question: ``check_digit``
    (MPAN fails its check digit), ``short_day`` (47 periods), ``negative`` (a negative value),
    ``not_midnight`` (settlementDayDate not at 00:00, ECS1014).
    """
    if fault == "check_digit":
        mpan = break_check_digit(mpan)
    entries = [
        consumption_day(
            day + dt.timedelta(days=n),
            rng,
            periods=47 if fault == "short_day" else 48,
            negative=fault == "negative",
        )
        for n in range(days)
    ]
    if fault == "not_midnight":
        entries[0]["settlementDay"]["settlementDayDate"] = f"{day:%Y-%m-%d}T01:00:00+00:00"
    return {
        "CommonBlock": common_block(
            interface_id="IF-021",
            event_code="[ActivePower]",
            sender=sender,
            role=role,
            env=env,
            recipients=recipients,
            mpan=mpan,
            distributor=distributor,
            dcp=dcp,
        ),
        "CustomBlock": {
            "B044": {"issuingDataServiceDIPID": sender},
            "B067": {
                "connectionTypeIndicator": "W",
                "connectionTypeEffectiveFromDate": "2020-01-01T00:00:00+00:00",
            },
            "B900": {
                "MQID": {"measurementQuantityID": "AI"},
                "settlementDayConsumptionPeriods": entries,
            },
        },
    }


def _b070(sp_id: str, sp_mpid: str, effective: str) -> dict[str, Any]:
    return {
        "proposedMeteringServiceDIPID": sp_id,
        "proposedMeteringServiceMPID": sp_mpid,
        "proposedMeteringServiceDIPEffectiveFromDate": effective,
        "contractReferenceMeteringService": None,
        "appointmentScenario": "COS",
    }


def _b071(sp_id: str, sp_mpid: str, effective: str) -> dict[str, Any]:
    return {
        "proposedDataServiceDIPID": sp_id,
        "proposedDataServiceMPID": sp_mpid,
        "proposedDataServiceDIPEffectiveFromDate": effective,
        "contractReferenceDataService": None,
        "appointmentScenario": "COS",
        "supplierNominatedMDRDIPID": None,
        "supplierNominatedMDRMPID": None,
        "supplierNominatedMDREffectiveFromDate": None,
        "supplierProposedConsentGranularity": "H",
        "supplierProposedDomesticIndicator": True,
        "traditionalFallBackReadFrequency": None,
    }


def _site_blocks(effective: str) -> dict[str, Any]:
    return {
        "B022": {
            "meteringPointPostcode": "SW1A 2AA",
            **{f"addressLine{i}": None for i in range(1, 10)},
        }
        | {"addressLine1": "1 Example Street", "addressLine2": "Exampletown"},
        "B023": {
            "connectionTypeIndicator": "W",
            "connectionTypeEffectiveFromDate": "2020-01-01T00:00:00+00:00",
            "energyDirection": "I",
            "meteredIndicator": True,
        },
        "B024": {
            "DUOSTariffID": "001",
            "DUOSTariffIDEffectiveFromDate": "2020-01-01T00:00:00+00:00",
        },
        "B025": {
            "energisationStatus": "E",
            "energisationStatusEffectiveFromDate": "2020-01-01T00:00:00+00:00",
        },
        "B026": {
            "marketSegmentIndicator": "S",
            "marketSegmentIndicatorEffectiveFromDate": effective,
        },
    }


def appointment(
    interface_id: str,
    *,
    service: str,
    sender: str,
    role: str,
    mpan: str,
    supplier: tuple[str, str],
    provider: tuple[str, str],
    effective: str,
    env: str = "UIT",
    recipients: list[str] | None = None,
    correlation: str | None = None,
    distributor: str | None = None,
    dcp: str | None = None,
    event: str | None = None,
    response: tuple[str, str | None] | None = None,
    registration_id: str = "c0ffee00-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """A message of the appointment chain IF-031..IF-036 for ``service`` ``MS`` or ``DS``.

    ``supplier`` and ``provider`` are ``(DIP ID, MPID)``. ``event`` defaults to the chain's usual
    event for the interface (``[MSApp]``, ``[MSAppInitialResp]``, ``[MSAppSPRequest]``,
    ``[MSAppSPResponse]``, ``[MSAppAccepted]``, ``[MSAppActive]``). ``response`` is the
    ``(responseCode, proposedAppointmentResponseCode)`` of B007 (IF-034/IF-035).
    """
    if service not in {"MS", "DS"}:
        raise ValueError("service is MS or DS")
    defaults = {
        "IF-031": "App",
        "IF-032": "AppInitialResp",
        "IF-033": "AppSPRequest",
        "IF-034": "AppSPResponse",
        "IF-035": "AppAccepted",
        "IF-036": "AppActive",
    }
    event = event or f"[{service}{defaults[interface_id]}]"
    r0 = {"responseCode": "A", "responseMessages": []} if interface_id == "IF-032" else None
    custom: dict[str, Any] = {"B013": {"CSSRegistrationID": registration_id}}
    b012 = {
        "serviceProviderAppointmentRequestingSupplierDIPID": supplier[0],
        "serviceProviderAppointmentRequestingSupplierMPID": supplier[1],
    }
    appointment_block = (
        _b070(*provider, effective) if service == "MS" else _b071(*provider, effective)
    )
    block_name = "B070" if service == "MS" else "B071"
    if interface_id in {"IF-031", "IF-032"}:
        custom[block_name] = appointment_block
    elif interface_id == "IF-033":
        custom.update({"B012": b012, block_name: appointment_block, **_site_blocks(effective)})
    elif interface_id in {"IF-034", "IF-035"}:
        code, reason = response or ("A", "SP000")
        custom.update(
            {
                "B007": {"responseCode": code, "proposedAppointmentResponseCode": reason},
                "B012": b012,
                block_name: appointment_block,
            }
        )
    elif interface_id == "IF-036":
        if service == "MS":
            incoming = {
                "B014": {
                    "incomingMeteringServiceDIPID": provider[0],
                    "incomingMeteringServiceEffectiveFromDate": effective,
                    "incomingMeteringServiceMPID": provider[1],
                    "contractReferenceMeteringService": None,
                    "appointmentScenario": "COS",
                }
            }
        else:
            incoming = {
                "B015": {
                    "incomingDataServiceMPID": provider[1],
                    "incomingDataServiceDIPID": provider[0],
                    "incomingDataServiceEffectiveFromDate": effective,
                    "contractReferenceDataService": None,
                    "appointmentScenario": "COS",
                    "traditionalFallBackReadFrequency": None,
                }
            }
        custom.update(
            {
                "B012": b012,
                **incoming,
                **_site_blocks(effective),
                "B028": {
                    "domesticPremiseIndicator": True,
                    "domesticPremiseIndicatorEffectiveFromDate": effective,
                },
            }
        )
    else:
        raise ValueError(f"{interface_id} is not in the appointment chain")
    return {
        "CommonBlock": common_block(
            interface_id=interface_id,
            event_code=event,
            sender=sender,
            role=role,
            env=env,
            recipients=recipients,
            mpan=mpan,
            distributor=distributor,
            dcp=dcp,
            correlation=correlation,
            r0=r0,
        ),
        "CustomBlock": custom,
    }


def if001(
    *,
    sender: str,
    mpan: str,
    incoming: tuple[str, str],
    effective: str,
    env: str = "UIT",
    outgoing: tuple[str, str] | None = None,
    recipients: list[str] | None = None,
    distributor: str | None = None,
) -> dict[str, Any]:
    """IF-001 from REGS: [ChangeOfSupplier] when ``outgoing`` is given, else [InitialRegistration]."""
    custom: dict[str, Any] = {
        "B013": {"CSSRegistrationID": "c0ffee00-0000-4000-8000-000000000002"},
        "B002": {
            "incomingSupplierDIPID": incoming[0],
            "incomingSupplierMPID": incoming[1],
            "supplierEffectiveFromDate": effective,
        },
    }
    if outgoing:
        custom["B003"] = {
            "outgoingSupplierDIPID": outgoing[0],
            "outgoingSupplierMPID": outgoing[1],
            "supplierEffectiveToDate": effective,
        }
    custom["B004"] = {
        "domesticPremiseIndicator": True,
        "domesticPremiseIndicatorEffectiveFromDate": effective,
    }
    custom.update(_site_blocks(effective))
    return {
        "CommonBlock": common_block(
            interface_id="IF-001",
            event_code="[ChangeOfSupplier]" if outgoing else "[InitialRegistration]",
            sender=sender,
            role="REGS",
            env=env,
            recipients=recipients,
            mpan=mpan,
            distributor=distributor,
        ),
        "CustomBlock": custom,
    }


def if041(
    *,
    sender: str,
    role: str,
    mpan: str,
    read_at: dt.datetime,
    rng: random.Random,
    env: str = "UIT",
    recipients: list[str] | None = None,
    distributor: str | None = None,
) -> dict[str, Any]:
    """IF-041 [ReadingRemote]: one cumulative register reading."""
    return {
        "CommonBlock": common_block(
            interface_id="IF-041",
            event_code="[ReadingRemote]",
            sender=sender,
            role=role,
            env=env,
            recipients=recipients,
            mpan=mpan,
            distributor=distributor,
        ),
        "CustomBlock": {
            "B064List": [
                {
                    "meterID": f"Z{rng.randrange(10**8):08d}A",
                    "cumulativeRegisterReading": f"{rng.uniform(100, 99999):.3f}",
                    "cumulativeRegisterReadingDateTime": dip_timestamp(read_at),
                    "readingMethod": "A",
                    "siteVisitCheckCode": None,
                }
            ]
        },
    }


def simple(
    interface_id: str,
    *,
    sender: str,
    role: str,
    mpan: str,
    effective: str,
    env: str = "UIT",
    recipients: list[str] | None = None,
) -> dict[str, Any]:
    """Small interfaces used in conformance checks: IF-007, IF-009, IF-024, IF-040."""
    events = {
        "IF-007": (
            "[EnergisationStatusChange]",
            {"B025": {"energisationStatus": "D", "energisationStatusEffectiveFromDate": effective}},
        ),
        "IF-009": (
            "[MPANDisconnection]",
            {"B041": {"disconnectionEffectiveFromDate": effective, "additionalInformation": None}},
        ),
        "IF-024": (
            "[SN-Vacant]",
            {
                "B057": {
                    "supplierNotificationEffectiveFromDate": effective,
                    "supplierNotificationExpiryDate": None,
                    "additionalInformation": None,
                }
            },
        ),
        "IF-040": (
            "[AnnualConsumption]",
            {
                "B059": {
                    "annualConsumption": "3100.000",
                    "annualConsumptionEffectiveFromDate": effective,
                    "annualConsumptionQualityIndicator": "A",
                }
            },
        ),
    }
    event, custom = events[interface_id]
    return {
        "CommonBlock": common_block(
            interface_id=interface_id,
            event_code=event,
            sender=sender,
            role=role,
            env=env,
            recipients=recipients,
            mpan=mpan,
        ),
        "CustomBlock": custom,
    }
