"""dipsim's own L1 schemas for the interfaces the demo uses, for runs without ``--spec-dir``.

Written for this project from the protocol facts in DIP.md (the official YAML is not shipped).
The common blocks (S0, S1, A0, D0, M0, R0) are checked closely because the envelope rules depend
on them; in the CustomBlock, the blocks the demo builds are checked field by field and any other
``Bnnn``/``BnnnList`` block is accepted as an object or array, so a real message carrying an
optional block this file does not describe is not refused. Run with the official specification
(``--spec-dir``) for full fidelity.
"""

from __future__ import annotations

from typing import Any

DATETIME: dict[str, Any] = {"type": "string", "minLength": 25, "maxLength": 25}
DIP_ID: dict[str, Any] = {"type": "string", "minLength": 10, "maxLength": 10}
MPID: dict[str, Any] = {"type": "string", "pattern": "^[A-Z]{4}$"}
KWH: dict[str, Any] = {"type": "string", "pattern": r"^-?\d{1,9}\.\d{3}$"}
SUR_PATTERN = r"^S-((IF|REP)-)?\d{3,4}-[0-9a-fA-F]{10}-[A-Z]{3,5}-\d{8}-[a-zA-Z0-9]+$"
GSP_GROUPS = ["_A", "_B", "_C", "_D", "_E", "_F", "_G", "_H", "_J", "_K", "_L", "_M", "_N", "_P"]
ENVIRONMENTS = ["PRD", "SITB", "SIT", "UIT", "DEV"]


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """A closed object: every key in ``required`` must be present, no unknown keys."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


S1 = obj(
    {
        "environmentTag": enum(*ENVIRONMENTS),
        "subText": nullable({"type": "string", "maxLength": 500}),
        "senderUniqueReference": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": SUR_PATTERN,
        },
        "senderTimestamp": DATETIME,
        "senderDIPID": DIP_ID,
        "senderRoleID": {"type": "string", "minLength": 3, "maxLength": 5},
        "senderCorrelationID": nullable({"type": "string", "minLength": 1, "maxLength": 60}),
        "DIPConnectionProviderID": nullable(DIP_ID),
    }
)
RECIPIENT_LIST = {"type": "array", "items": nullable(DIP_ID)}
A0 = obj(
    {
        "primaryRecipients": RECIPIENT_LIST,
        "secondaryRecipients": RECIPIENT_LIST,
        "always": RECIPIENT_LIST,
    }
)
D0 = obj(
    {
        "transactionID": {"type": "string", "maxLength": 65},
        "transactionTimestamp": DATETIME,
        "publicationID": {"type": "string", "minLength": 7, "maxLength": 8},
        "initialCorrelationID": nullable({"type": "string", "minLength": 1, "maxLength": 60}),
        "replayIndicator": {"type": "boolean"},
        "serviceTicketURL": nullable({"type": "string", "minLength": 1, "maxLength": 250}),
    }
)
M0 = obj(
    {
        "MPANCore": {"type": "string", "minLength": 13, "maxLength": 13, "pattern": r"^\d{13}$"},
        "distributorDIPID": DIP_ID,
        "GSPGroupID": enum(*GSP_GROUPS),
    }
)
R0 = obj(
    {
        "responseCode": enum("A", "R", "L", "W", "x"),
        "responseMessages": {"type": "array", "items": {"type": "string", "maxLength": 200}},
    }
)

APPOINTMENT_SCENARIO = enum("COS", "CSP", "USP", "SEG", "MCA", "MCS", "ALG")
BLOCKS: dict[str, dict[str, Any]] = {
    "B002": obj(
        {
            "incomingSupplierDIPID": DIP_ID,
            "incomingSupplierMPID": MPID,
            "supplierEffectiveFromDate": DATETIME,
        }
    ),
    "B003": obj(
        {
            "outgoingSupplierDIPID": DIP_ID,
            "outgoingSupplierMPID": MPID,
            "supplierEffectiveToDate": DATETIME,
        }
    ),
    "B004": obj(
        {
            "domesticPremiseIndicator": {"type": "boolean"},
            "domesticPremiseIndicatorEffectiveFromDate": DATETIME,
        }
    ),
    "B007": obj(
        {
            "responseCode": enum("A", "R", "L", "W", "x"),
            "proposedAppointmentResponseCode": nullable(
                {"type": "string", "minLength": 1, "maxLength": 200}
            ),
        }
    ),
    "B012": obj(
        {
            "serviceProviderAppointmentRequestingSupplierDIPID": DIP_ID,
            "serviceProviderAppointmentRequestingSupplierMPID": MPID,
        }
    ),
    "B013": obj({"CSSRegistrationID": {"type": "string", "maxLength": 36}}),
    "B014": obj(
        {
            "incomingMeteringServiceDIPID": DIP_ID,
            "incomingMeteringServiceEffectiveFromDate": DATETIME,
            "incomingMeteringServiceMPID": MPID,
            "contractReferenceMeteringService": nullable(
                {"type": "string", "minLength": 1, "maxLength": 50}
            ),
            "appointmentScenario": APPOINTMENT_SCENARIO,
        }
    ),
    "B015": obj(
        {
            "incomingDataServiceMPID": MPID,
            "incomingDataServiceDIPID": DIP_ID,
            "incomingDataServiceEffectiveFromDate": DATETIME,
            "contractReferenceDataService": nullable(
                {"type": "string", "minLength": 1, "maxLength": 50}
            ),
            "appointmentScenario": APPOINTMENT_SCENARIO,
            "traditionalFallBackReadFrequency": nullable(enum("W", "F", "M", "Q", "S", "A", "x")),
        }
    ),
    "B022": obj(
        {
            "meteringPointPostcode": nullable({"type": "string", "minLength": 1, "maxLength": 10}),
            **{
                f"addressLine{i}": nullable({"type": "string", "maxLength": 40})
                for i in range(1, 10)
            },
        }
    ),
    "B023": obj(
        {
            "connectionTypeIndicator": enum("W", "L", "H", "E", "U"),
            "connectionTypeEffectiveFromDate": DATETIME,
            "energyDirection": enum("I", "E"),
            "meteredIndicator": {"type": "boolean"},
        }
    ),
    "B024": obj(
        {
            "DUOSTariffID": {"type": "string", "minLength": 1, "maxLength": 3},
            "DUOSTariffIDEffectiveFromDate": DATETIME,
        }
    ),
    "B025": obj(
        {"energisationStatus": enum("D", "E", "U"), "energisationStatusEffectiveFromDate": DATETIME}
    ),
    "B026": obj(
        {
            "marketSegmentIndicator": enum("U", "S", "A"),
            "marketSegmentIndicatorEffectiveFromDate": DATETIME,
        }
    ),
    "B028": obj(
        {
            "domesticPremiseIndicator": {"type": "boolean"},
            "domesticPremiseIndicatorEffectiveFromDate": DATETIME,
        }
    ),
    "B041": obj(
        {
            "disconnectionEffectiveFromDate": DATETIME,
            "additionalInformation": nullable(
                {"type": "string", "minLength": 1, "maxLength": 2000}
            ),
        }
    ),
    "B044": obj({"issuingDataServiceDIPID": DIP_ID}),
    "B057": obj(
        {
            "supplierNotificationEffectiveFromDate": DATETIME,
            "supplierNotificationExpiryDate": nullable(DATETIME),
            "additionalInformation": nullable(
                {"type": "string", "minLength": 1, "maxLength": 2000}
            ),
        }
    ),
    "B059": obj(
        {
            "annualConsumption": KWH,
            "annualConsumptionEffectiveFromDate": DATETIME,
            "annualConsumptionQualityIndicator": {"type": "string", "minLength": 1, "maxLength": 1},
        }
    ),
    "B064List": {
        "type": "array",
        "items": obj(
            {
                "meterID": {"type": "string", "maxLength": 10},
                "cumulativeRegisterReading": KWH,
                "cumulativeRegisterReadingDateTime": DATETIME,
                "readingMethod": enum("A", "C", "E", "S"),
                "siteVisitCheckCode": nullable({"type": "string", "minLength": 2, "maxLength": 2}),
            }
        ),
    },
    "B067": obj(
        {
            "connectionTypeIndicator": enum("W", "L", "H", "E", "U"),
            "connectionTypeEffectiveFromDate": DATETIME,
        }
    ),
    "B070": obj(
        {
            "proposedMeteringServiceDIPID": DIP_ID,
            "proposedMeteringServiceMPID": MPID,
            "proposedMeteringServiceDIPEffectiveFromDate": DATETIME,
            "contractReferenceMeteringService": nullable(
                {"type": "string", "minLength": 1, "maxLength": 50}
            ),
            "appointmentScenario": APPOINTMENT_SCENARIO,
        }
    ),
    "B071": obj(
        {
            "proposedDataServiceDIPID": DIP_ID,
            "proposedDataServiceMPID": MPID,
            "proposedDataServiceDIPEffectiveFromDate": DATETIME,
            "contractReferenceDataService": nullable(
                {"type": "string", "minLength": 1, "maxLength": 50}
            ),
            "appointmentScenario": APPOINTMENT_SCENARIO,
            "supplierNominatedMDRDIPID": nullable(DIP_ID),
            "supplierNominatedMDRMPID": nullable(MPID),
            "supplierNominatedMDREffectiveFromDate": nullable(DATETIME),
            "supplierProposedConsentGranularity": enum("H", "D", "M", "N", "x"),
            "supplierProposedDomesticIndicator": {"type": "boolean"},
            "traditionalFallBackReadFrequency": nullable(enum("W", "F", "M", "Q", "S", "A", "x")),
        }
    ),
    "B900": obj(
        {
            "MQID": obj({"measurementQuantityID": enum("AI", "AE", "RI", "RE")}),
            "settlementDayConsumptionPeriods": {
                "type": "array",
                "minItems": 1,
                "maxItems": 200,
                "items": obj(
                    {
                        "settlementDay": obj(
                            {
                                "settlementDayDate": DATETIME,
                                "periodDuration": {"type": "integer", "minimum": 30, "maximum": 30},
                            }
                        ),
                        "consumptionPeriods": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 48,
                            "items": obj(
                                {
                                    "sp": DATETIME,
                                    "v": KWH,
                                    "q": {"type": "string", "minLength": 1, "maxLength": 5},
                                    "e": nullable(enum(*[str(i) for i in range(1, 11)])),
                                    "arc": nullable(enum("A", "E", "M", "R", "S", "T", "X")),
                                }
                            ),
                        },
                    }
                ),
            },
        }
    ),
}

# (interface, event codes, required custom blocks, has R0)
VARIANTS: list[tuple[str, list[str], list[str], bool]] = [
    (
        "IF-001",
        ["[InitialRegistration]"],
        ["B013", "B002", "B004", "B022", "B023", "B024", "B025", "B026"],
        False,
    ),
    (
        "IF-001",
        ["[ChangeOfSupplier]"],
        ["B013", "B002", "B003", "B004", "B022", "B023", "B024", "B025", "B026"],
        False,
    ),
    ("IF-007", ["[EnergisationStatusChange]"], ["B025"], False),
    ("IF-009", ["[MPANDisconnection]"], ["B041"], False),
    ("IF-021", ["[ActivePower]", "[ReactivePower]"], ["B044", "B067", "B900"], False),
    ("IF-024", ["[SN-Vacant]", "[SN-NoComms]"], ["B057"], False),
    ("IF-040", ["[AnnualConsumption]"], ["B059"], False),
    ("IF-031", ["[MSApp]"], ["B070"], False),
    ("IF-031", ["[DSApp]"], ["B071"], False),
    ("IF-032", ["[MSAppInitialResp]"], ["B070"], True),
    ("IF-032", ["[DSAppInitialResp]"], ["B071"], True),
    (
        "IF-033",
        ["[MSAppSPRequest]"],
        ["B012", "B070", "B022", "B023", "B024", "B025", "B026"],
        False,
    ),
    (
        "IF-033",
        ["[DSAppSPRequest]"],
        ["B012", "B071", "B022", "B023", "B024", "B025", "B026"],
        False,
    ),
    ("IF-034", ["[MSAppSPResponse]"], ["B007", "B012", "B070"], False),
    ("IF-034", ["[DSAppSPResponse]"], ["B007", "B012", "B071"], False),
    (
        "IF-035",
        ["[MSAppAccepted]", "[MSAppRejected]", "[MSAppLapsed]"],
        ["B007", "B012", "B070"],
        False,
    ),
    (
        "IF-035",
        ["[DSAppAccepted]", "[DSAppRejected]", "[DSAppLapsed]"],
        ["B007", "B012", "B071"],
        False,
    ),
    (
        "IF-036",
        ["[MSAppActive]"],
        ["B012", "B014", "B022", "B023", "B024", "B025", "B026", "B028"],
        False,
    ),
    (
        "IF-036",
        ["[DSAppActive]"],
        ["B012", "B015", "B022", "B023", "B024", "B025", "B026", "B028"],
        False,
    ),
    (
        "IF-041",
        [
            "[ReadingRemote]",
            "[ReadingRemv]",
            "[ReadingInstl]",
            "[ReadingEnergisationChg]",
            "[ReadingCOR]",
            "[ReadingOnSite]",
            "[ReadingCOS]",
            "[DSEstimate]",
            "[SupplierAgreedCOS]",
            "[ReadingOverride]",
        ],
        [],
        False,
    ),
]

SCHEMA_VERSION = "011"


def variant_schema(
    interface_id: str, events: list[str], required_blocks: list[str], has_r0: bool
) -> dict[str, Any]:
    common_required: dict[str, Any] = {
        "S0": obj(
            {
                "interfaceID": enum(interface_id),
                "schemaVersion": enum(SCHEMA_VERSION),
                "eventCode": enum(*events),
            }
        ),
        "S1": S1,
        "M0": M0,
    }
    common_optional: dict[str, Any] = {"A0": A0, "D0": D0}
    if has_r0:
        common_optional["R0"] = R0
    custom = {
        "type": "object",
        "properties": {name: BLOCKS[name] for name in required_blocks},
        "required": required_blocks,
        # Blocks this file does not describe are accepted in outline only (see module docstring).
        "patternProperties": {r"^B\d{3}(List)?$": {"type": ["object", "array"]}},
        "additionalProperties": False,
    }
    properties: dict[str, Any] = custom["properties"]  # type: ignore[assignment]
    for name, block in BLOCKS.items():
        properties.setdefault(name, block)
    return obj({"CommonBlock": obj(common_required, common_optional), "CustomBlock": custom})


def builtin_variants() -> dict[tuple[str, str], dict[str, Any]]:
    """Return ``{(interface, event code): schema}`` for every built-in variant."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for interface_id, events, blocks, has_r0 in VARIANTS:
        schema = variant_schema(interface_id, events, blocks, has_r0)
        for event in events:
            out[(interface_id, event)] = schema
    return out
