"""Busbar's own JSON schemas for the interfaces the demo exchanges (spec version ``busbar-builtin``).

Written for Busbar from the protocol facts (DIP.md sections 2, 9, 10 and 11), not derived from the
official files, so that Busbar validates with no specification imported. With the official
specification imported (``manage.py import_dip_spec``), a tenant validates against that instead.

Fidelity: the CommonBlock (S0, S1, A0, D0, M0, R0) and every CustomBlock block that the demo's
messages carry are described field by field, as strictly as the DIP describes them and no more
(decimals are 9.3 strings, timestamps exactly 25 characters, DIP IDs 10, MPIDs four capitals).
Objects are closed (``additionalProperties: false``) as the DIP's are, except the two blocks the DIP
itself leaves open (B013, B025). Optional blocks that the demo never sends are accepted in outline
(an object or an array) under their own names only; any other key is refused. The test suite checks
these schemas against the official ones in both directions when the specification is available.
"""

from __future__ import annotations

from typing import Any

SPEC_NAME = "busbar-builtin"
SCHEMA_VERSION = "011"
DRAFT4 = "http://json-schema.org/draft-04/schema#"

Schema = dict[str, Any]


def text(low: int | None = None, high: int | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "string", **extra}
    if low is not None:
        out["minLength"] = low
    if high is not None:
        out["maxLength"] = high
    return out


def maybe(schema: Schema) -> Schema:
    """The same schema, also accepting null (the DIP's ``nullable``)."""
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def choice(*values: str, low: int | None = None, high: int | None = None) -> Schema:
    return text(low, high, enum=list(values))


def closed(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**required, **(optional or {})},
    }
    if required:  # draft 4 forbids an empty "required"
        out["required"] = list(required)
    return out


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


TIMESTAMP = text(25, 25)  # DT-003: YYYY-MM-DDThh:mm:ss+hh:mm, length only in the DIP's schema
DIP_ID = text(10, 10)
MPID = text(4, 4, pattern="^[A-Z]{4}$")
DECIMAL_9_3 = text(pattern=r"^-?\d{1,9}\.\d{3}$")
SENDER_REFERENCE = r"^S-((IF|REP)-)?\d{3,4}-[0-9a-fA-F]{10}-[A-Z]{3,5}-\d{8}-[a-zA-Z0-9]+$"
GSP_GROUPS = ("_A", "_B", "_C", "_D", "_E", "_F", "_G", "_H", "_J", "_K", "_L", "_M", "_N", "_P")
RESPONSE_CODES = ("A", "R", "L", "W", "x")
SCENARIOS = ("COS", "CSP", "USP", "SEG", "MCA", "MCS", "ALG")
READ_FREQUENCY = maybe(choice("W", "F", "M", "Q", "S", "A", "x", low=1, high=1))
QUALITY_FLAGS = (
    "A", "E", *(f"E{i}" for i in range(10)), "ZE", "ZE1", "ZE2", "ZE3", "A1", "A2", "A3",
    "AAE1", "AAE2", "AAE3", "EAE1", "EAE2", "EAE3", *(f"EA{i}" for i in range(1, 14)),
)  # fmt: skip
SITE_VISIT_CODES = (
    *(f"{i:02d}" for i in range(1, 12)), *(f"{i:02d}" for i in range(13, 45)),
    *(f"{i:02d}" for i in range(50, 59)), "88", "89",
)  # fmt: skip

COMMON: dict[str, Schema] = {
    "S1": closed(
        {
            "environmentTag": choice("PRD", "SITB", "SIT", "UIT", "DEV", low=3, high=10),
            "subText": maybe(text(1, 500)),
            "senderUniqueReference": text(1, 200, pattern=SENDER_REFERENCE),
            "senderTimestamp": TIMESTAMP,
            "senderDIPID": DIP_ID,
            "senderRoleID": text(3, 5),
            "senderCorrelationID": maybe(text(1, 60)),
            "DIPConnectionProviderID": maybe(DIP_ID),
        }
    ),
    "A0": closed(
        {
            name: {"type": "array", "items": maybe(DIP_ID)}
            for name in ("primaryRecipients", "secondaryRecipients", "always")
        }
    ),
    "D0": closed(
        {
            "transactionID": text(None, 65),
            "transactionTimestamp": TIMESTAMP,
            "publicationID": text(7, 8),
            "initialCorrelationID": maybe(text(1, 60)),
            "replayIndicator": {"type": "boolean"},
            "serviceTicketURL": maybe(text(1, 250)),
        }
    ),
    "M0": closed(
        {
            "MPANCore": text(13, 13, pattern=r"^\d{13}$"),
            "distributorDIPID": DIP_ID,
            "GSPGroupID": choice(*GSP_GROUPS, low=2, high=2),
        }
    ),
    "R0": closed(
        {
            "responseCode": choice(*RESPONSE_CODES, low=1, high=1),
            "responseMessages": {"type": "array", "items": maybe(text(1, 200))},
        }
    ),
}

_PERIOD = closed(
    {
        "sp": TIMESTAMP,  # the UTC end of the half hour (DI-082)
        "v": DECIMAL_9_3,
        "q": choice(*QUALITY_FLAGS, low=1, high=5),
        "e": maybe(choice(*(str(i) for i in range(1, 11)), low=1, high=2)),
        "arc": maybe(choice("A", "E", "M", "R", "S", "T", "X", low=1, high=1)),
    }
)
_DAY = closed(
    {
        "settlementDay": closed(
            {
                "settlementDayDate": TIMESTAMP,
                "periodDuration": {
                    "type": "integer",
                    "minimum": 30,
                    "maximum": 30,
                    "multipleOf": 15,
                },
            }
        ),
        "consumptionPeriods": {"type": "array", "minItems": 1, "maxItems": 48, "items": _PERIOD},
    }
)


def _supplier(prefix: str, date_field: str) -> Schema:
    return closed(
        {f"{prefix}SupplierDIPID": DIP_ID, f"{prefix}SupplierMPID": MPID, date_field: TIMESTAMP}
    )


def _dated(name: str, value: Schema) -> Schema:
    return closed({name: value, f"{name}EffectiveFromDate": TIMESTAMP})


def _open(required: dict[str, Schema]) -> Schema:
    """An object the DIP leaves open to extra keys (its schema has no additionalProperties)."""
    return {"type": "object", "properties": required, "required": list(required)}


BLOCKS: dict[str, Schema] = {
    "B002": _supplier("incoming", "supplierEffectiveFromDate"),
    "B003": _supplier("outgoing", "supplierEffectiveToDate"),
    "B004": _dated("domesticPremiseIndicator", {"type": "boolean"}),
    "B007": closed(
        {
            "responseCode": choice(*RESPONSE_CODES, low=1, high=1),
            "proposedAppointmentResponseCode": maybe(text(1, 200)),
        }
    ),
    "B012": closed(
        {
            "serviceProviderAppointmentRequestingSupplierDIPID": DIP_ID,
            "serviceProviderAppointmentRequestingSupplierMPID": MPID,
        }
    ),
    "B013": _open({"CSSRegistrationID": text(None, 36)}),
    "B014": closed(
        {
            "incomingMeteringServiceDIPID": DIP_ID,
            "incomingMeteringServiceEffectiveFromDate": TIMESTAMP,
            "incomingMeteringServiceMPID": MPID,
            "contractReferenceMeteringService": maybe(text(1, 50)),
            "appointmentScenario": choice(*SCENARIOS, high=3),
        }
    ),
    "B015": closed(
        {
            "incomingDataServiceMPID": MPID,
            "incomingDataServiceDIPID": DIP_ID,
            "incomingDataServiceEffectiveFromDate": TIMESTAMP,
            "contractReferenceDataService": maybe(text(1, 50)),
            "appointmentScenario": choice(*SCENARIOS, high=3),
            "traditionalFallBackReadFrequency": READ_FREQUENCY,
        }
    ),
    "B022": closed(
        {
            "meteringPointPostcode": maybe(text(1, 10)),
            **{f"addressLine{i}": maybe(text(0, 40)) for i in range(1, 10)},
        }
    ),
    "B023": closed(
        {
            "connectionTypeIndicator": choice("W", "L", "H", "E", "U", low=1, high=1),
            "connectionTypeEffectiveFromDate": TIMESTAMP,
            "energyDirection": choice("I", "E", low=1, high=1),
            "meteredIndicator": {"type": "boolean"},
        }
    ),
    "B024": closed({"DUOSTariffID": text(1, 3), "DUOSTariffIDEffectiveFromDate": TIMESTAMP}),
    "B025": _open(
        {
            "energisationStatus": choice("D", "E", "U", low=1, high=1),
            "energisationStatusEffectiveFromDate": TIMESTAMP,
        }
    ),
    "B026": _dated("marketSegmentIndicator", choice("U", "S", "A", low=1, high=1)),
    "B028": _dated("domesticPremiseIndicator", {"type": "boolean"}),
    "B044": closed({"issuingDataServiceDIPID": DIP_ID}),
    "B064List": {
        "type": "array",
        "items": closed(
            {
                "meterID": text(None, 10),
                "cumulativeRegisterReading": DECIMAL_9_3,
                "cumulativeRegisterReadingDateTime": TIMESTAMP,
                "readingMethod": choice("A", "C", "E", "S", high=1),
                "siteVisitCheckCode": maybe(choice(*SITE_VISIT_CODES, low=2, high=2)),
            }
        ),
    },
    "B065List": {
        "type": "array",
        "maxItems": 48,
        "items": closed(
            {
                "meterID": text(None, 10),
                "configurableRegisterReadingDate": TIMESTAMP,
                "configurableRegisterID": text(1, 2),
                "configurableRegisterReading": DECIMAL_9_3,
            }
        ),
    },
    "B067": closed(
        {
            "connectionTypeIndicator": choice("W", "L", "H", "E", "U", low=1, high=1),
            "connectionTypeEffectiveFromDate": TIMESTAMP,
        }
    ),
    "B070": closed(
        {
            "proposedMeteringServiceDIPID": DIP_ID,
            "proposedMeteringServiceMPID": MPID,
            "proposedMeteringServiceDIPEffectiveFromDate": TIMESTAMP,
            "contractReferenceMeteringService": maybe(text(1, 50)),
            "appointmentScenario": choice(*SCENARIOS, high=3),
        }
    ),
    "B071": closed(
        {
            "proposedDataServiceDIPID": DIP_ID,
            "proposedDataServiceMPID": MPID,
            "proposedDataServiceDIPEffectiveFromDate": TIMESTAMP,
            "contractReferenceDataService": maybe(text(1, 50)),
            "appointmentScenario": choice(*SCENARIOS, high=3),
            "supplierNominatedMDRDIPID": maybe(DIP_ID),
            "supplierNominatedMDRMPID": maybe(MPID),
            "supplierNominatedMDREffectiveFromDate": maybe(TIMESTAMP),
            "supplierProposedConsentGranularity": choice("H", "D", "M", "N", "x", high=1),
            "supplierProposedDomesticIndicator": {"type": "boolean"},
            "traditionalFallBackReadFrequency": READ_FREQUENCY,
        }
    ),
    "B900": closed(
        {
            "MQID": closed(
                {"measurementQuantityID": choice("AI", "AE", "RI", "RE", low=2, high=2)}
            ),
            "settlementDayConsumptionPeriods": {
                "type": "array",
                "minItems": 1,
                "maxItems": 200,
                "items": _DAY,
            },
        }
    ),
}

OUTLINE_OBJECT: Schema = {"type": "object"}
OUTLINE_ARRAY: Schema = {"type": "array"}


def outline(name: str) -> Schema:
    """An optional block the demo does not send: checked only as an object or a list."""
    return OUTLINE_ARRAY if name.endswith("List") else OUTLINE_OBJECT


_IF001_OPTIONAL = ["B006", "B027", "B029", "B030", "B031", "B032", "B035List", "B037List"]
_IF001_REQUIRED = ["B013", "B002", "B004", "B022", "B023", "B024", "B025", "B026"]
_IF033_OPTIONAL = ["B013", "B072", "B029", "B031", "B032", "B905List", "B907List", "B908List"]
_SITE = ["B022", "B023", "B024", "B025", "B026"]
_IF036_OPTIONAL = ["B013", "B005", "B027", "B029", "B030", "B031", "B032", "B905List", "B035List", "B037List"]  # fmt: skip
IF041_EVENTS = [
    "[ReadingRemote]", "[ReadingRemv]", "[ReadingInstl]", "[ReadingEnergisationChg]",
    "[ReadingCOR]", "[ReadingOnSite]", "[ReadingCOS]", "[DSEstimate]", "[SupplierAgreedCOS]",
    "[ReadingOverride]",
]  # fmt: skip


# (interface, event codes, required custom blocks, optional custom blocks, has R0)
VARIANTS: list[tuple[str, list[str], list[str], list[str], bool]] = [
    ("IF-001", ["[InitialRegistration]"], _IF001_REQUIRED, _IF001_OPTIONAL, False),
    (
        "IF-001",
        ["[ChangeOfSupplier]"],
        [*_IF001_REQUIRED, "B003"],
        ["B005", *_IF001_OPTIONAL],
        False,
    ),
    ("IF-021", ["[ActivePower]", "[ReactivePower]"], ["B044", "B067", "B900"], [], False),
    ("IF-031", ["[MSApp]"], ["B070"], ["B013"], False),
    ("IF-031", ["[DSApp]"], ["B071"], ["B013"], False),
    ("IF-032", ["[MSAppInitialResp]"], ["B070"], ["B013"], True),
    ("IF-032", ["[DSAppInitialResp]"], ["B071"], ["B013"], True),
    ("IF-033", ["[MSAppSPRequest]"], ["B012", "B070", *_SITE], _IF033_OPTIONAL, False),
    ("IF-033", ["[DSAppSPRequest]"], ["B012", "B071", *_SITE], _IF033_OPTIONAL, False),
    ("IF-034", ["[MSAppSPResponse]"], ["B007", "B012", "B070"], ["B013"], False),
    ("IF-034", ["[DSAppSPResponse]"], ["B007", "B012", "B071"], ["B013", "B070", "B018"], False),
    (
        "IF-035",
        ["[MSAppAccepted]", "[MSAppRejected]", "[MSAppLapsed]"],
        ["B007", "B012", "B070"],
        ["B013"],
        False,
    ),
    ("IF-035", ["[DSAppAccepted]"], ["B007", "B012", "B071"], ["B013", "B019"], False),
    ("IF-035", ["[DSAppRejected]", "[DSAppLapsed]"], ["B007", "B012", "B071"], ["B013"], False),
    (
        "IF-036",
        ["[MSAppActive]"],
        ["B012", "B014", *_SITE, "B028"],
        ["B017", *_IF036_OPTIONAL],
        False,
    ),
    (
        "IF-036",
        ["[DSAppActive]"],
        ["B012", "B015", *_SITE, "B028"],
        ["B019", "B016", "B068", *_IF036_OPTIONAL],
        False,
    ),
    ("IF-041", IF041_EVENTS, [], ["B064List", "B065List"], False),
]


def variant_schema(
    interface_id: str, events: list[str], required: list[str], optional: list[str], has_r0: bool
) -> Schema:
    """The schema of one interface variant, self-contained (draft 4, local definitions)."""
    common_optional = {"A0": ref("A0"), "D0": ref("D0")}
    if has_r0:
        common_optional["R0"] = ref("R0")
    s0 = closed(
        {
            "interfaceID": choice(interface_id),
            "schemaVersion": choice(SCHEMA_VERSION),
            "eventCode": choice(*events),
        }
    )
    custom = closed(
        {name: ref(name) for name in required},
        {name: ref(name) if name in BLOCKS else outline(name) for name in optional},
    )
    payload = closed(
        {
            "CommonBlock": closed({"S0": s0, "S1": ref("S1"), "M0": ref("M0")}, common_optional),
            "CustomBlock": custom,
        }
    )
    used = {"S1", "M0", *common_optional, *required, *(n for n in optional if n in BLOCKS)}
    definitions = {name: (COMMON.get(name) or BLOCKS[name]) for name in sorted(used)}
    return {"$schema": DRAFT4, **payload, "definitions": definitions}


def builtin_schemas() -> dict[tuple[str, str, str], Schema]:
    """``{(interface id, schema version, event code): schema}`` for every built-in variant."""
    out: dict[tuple[str, str, str], Schema] = {}
    for interface_id, events, required, optional, has_r0 in VARIANTS:
        schema = variant_schema(interface_id, events, required, optional, has_r0)
        for event in events:
            out[(interface_id, SCHEMA_VERSION, event)] = schema
    return out
