"""The three stages. Each takes a parsed payload and returns findings; none touches the database.

Rule ids carry a version (``CTX-MPAN-CHECK@1``): a changed rule gets a new version, so stored
findings say which rule made them.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from messaging.validation import jsonparse
from messaging.validation.registry import SchemaRegistry, SchemaUnusable
from messaging.validation.types import (
    BusinessKey,
    Finding,
    KeyRecord,
    RuleSetting,
    Severity,
    Stage,
    ValidationContext,
)

MAX_SCHEMA_FINDINGS = 50
MPAN_WEIGHTS = (3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
LONDON = ZoneInfo("Europe/London")
HALF_HOUR = dt.timedelta(minutes=30)
FUTURE_SKEW = dt.timedelta(minutes=5)

# Who receives each interface (DIP.md section 11; sourced from the interface catalogue [S], so a
# mismatch is a warning, not a refusal).
RECEIVER_ROLES: dict[str, frozenset[str]] = {
    "IF-001": frozenset({"SUP", "MDS", "LDSO"}),
    "IF-021": frozenset({"MDS", "LSS", "LDSO", "SUP"}),
    "IF-031": frozenset({"REGS"}),
    "IF-032": frozenset({"SUP"}),
    "IF-033": frozenset({"ADS", "SDS", "UMSDS", "MSA", "MSS", "UMSO"}),
    "IF-034": frozenset({"REGS"}),
    "IF-035": frozenset({"SUP", "MSA", "MSS", "UMSO", "ADS", "SDS", "UMSDS"}),
    "IF-036": frozenset({"SUP", "ADS", "SDS", "UMSDS", "MSA", "MSS", "UMSO", "LDSO", "MDS", "EES"}),
    "IF-041": frozenset({"ADS", "SDS", "UMSDS", "SUP", "LDSO"}),
}


def json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out[:300]  # the store's column; DIP paths are far shorter


def get_ci(mapping: Any, key: str) -> Any:
    """``mapping[key]`` ignoring key case (the DIP accepts any case on ingress), else None."""
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


def parse_timestamp(value: Any) -> dt.datetime | None:
    """A DT-003 timestamp (``YYYY-MM-DDThh:mm:ss+hh:mm``, 25 characters), else None."""
    if not isinstance(value, str) or len(value) != 25 or not TIMESTAMP_RE.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def utc_version(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mpan_check_digit_ok(mpan: str) -> bool:
    """True when a 13-digit MPAN core's last digit is its check digit (DIP.md section 9)."""
    if len(mpan) != 13 or not mpan.isascii() or not mpan.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(mpan[:12], MPAN_WEIGHTS, strict=True))
    return total % 11 % 10 == int(mpan[12])


@functools.lru_cache(maxsize=4096)
def local_periods(day: dt.date) -> int:
    """Settlement periods in the local (UK) settlement day ``day``: 46, 48 or 50 (DIP.md 10)."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=LONDON)
    nxt = day + dt.timedelta(days=1)
    end = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=LONDON)
    return int((end.astimezone(dt.UTC) - start.astimezone(dt.UTC)) / HALF_HOUR)


# ---- syntactic -------------------------------------------------------------------------------


class Syntax:
    """What the syntactic stage learnt: S0's three values, the findings, and whether to stop."""

    def __init__(self) -> None:
        self.interface: str | None = None
        self.schema_version: str | None = None
        self.event_code: str | None = None
        self.findings: list[Finding] = []

    def fatal(self, code: str, path: str, text: str, rule: str) -> None:
        self.findings.append(Finding(Stage.SYNTACTIC, Severity.FATAL, code, path, text, rule))

    @property
    def stopped(self) -> bool:
        return bool(self.findings)


def parse_payload(raw: Any) -> tuple[dict[str, Any] | None, Finding | None]:
    """The payload object from bytes, text or a parsed value; ``{"payload": ...}`` is unwrapped.

    Returns ``(payload, None)`` or ``(None, fatal finding)``; never raises for bad input.
    """
    value = raw
    if isinstance(raw, bytes | bytearray | memoryview | str):
        try:
            value = jsonparse.loads(raw)
        except (ValueError, RecursionError) as err:
            text = (
                f"not JSON: {err}"
                if not isinstance(err, RecursionError)
                else "JSON nested too deeply"
            )
            return None, Finding(
                Stage.SYNTACTIC, Severity.FATAL, "SYN-JSON", "$", text[:500], "SYN-JSON@1"
            )
    if isinstance(value, dict) and len(value) == 1:
        inner = get_ci(value, "payload")
        if isinstance(inner, dict):
            value = inner
    if not isinstance(value, dict):
        return None, Finding(
            Stage.SYNTACTIC, Severity.FATAL, "SYN-NOT-OBJECT", "$",
            f"a message payload is a JSON object, not {type(value).__name__}", "SYN-JSON@1",
        )  # fmt: skip
    return value, None


def syntactic(
    payload: dict[str, Any], context: ValidationContext, registry: SchemaRegistry
) -> Syntax:
    """S0 names a known interface, schema version and event code, and the payload meets its schema."""
    out = Syntax()
    rule = "SYN-S0@1"
    s0 = get_ci(get_ci(payload, "CommonBlock"), "S0")
    values = {}
    for name in ("interfaceID", "schemaVersion", "eventCode"):
        value = get_ci(s0, name)
        if not isinstance(value, str) or not value:
            out.fatal(
                "SYN-S0", f"$.CommonBlock.S0.{name}", f"S0.{name} is missing or not a string", rule
            )
        values[name] = value if isinstance(value, str) else None
    out.interface, out.schema_version, out.event_code = (
        values["interfaceID"], values["schemaVersion"], values["eventCode"],
    )  # fmt: skip
    if out.stopped:
        return out
    interface, version, event = values["interfaceID"], values["schemaVersion"], values["eventCode"]
    assert interface is not None
    assert version is not None
    assert event is not None
    if context.channel and interface != context.channel:
        out.fatal(
            "SYN-CHANNEL", "$.CommonBlock.S0.interfaceID",
            f"{interface[:20]!r} arrived on the {context.channel} channel", rule,
        )  # fmt: skip
        return out
    versions = registry.schema_versions(interface)
    if not versions:
        out.fatal(
            "SYN-UNKNOWN-INTERFACE", "$.CommonBlock.S0.interfaceID",
            f"{interface[:20]!r} is not an interface of spec {registry.name}", rule,
        )  # fmt: skip
        return out
    if version not in versions:
        out.fatal(
            "SYN-UNKNOWN-SCHEMA-VERSION", "$.CommonBlock.S0.schemaVersion",
            f"{interface} has no schema version {version[:20]!r} in spec {registry.name}"
            f" (it has {', '.join(versions)})", rule,
        )  # fmt: skip
        return out
    key = registry.resolve(interface, version, event)
    if key is None:
        known = registry.event_codes(interface, version)
        out.fatal(
            "SYN-UNKNOWN-EVENT", "$.CommonBlock.S0.eventCode",
            f"{event[:60]!r} is not an event code of {interface} {version} in spec {registry.name}"
            f" (it has {', '.join(known[:20])})", rule,
        )  # fmt: skip
        return out
    schema_rule = f"SCHEMA@{registry.name}"
    try:
        validator = registry.compiled(key).validator
        if validator.is_valid(payload):
            return out
        for n, err in enumerate(validator.iter_errors(payload)):
            if n >= MAX_SCHEMA_FINDINGS:
                out.fatal(
                    "SYN-SCHEMA", "$", f"more than {MAX_SCHEMA_FINDINGS} schema errors", schema_rule
                )
                break
            out.fatal(
                "SYN-SCHEMA", json_path(err.instance_path), str(err.message)[:500], schema_rule
            )
    except SchemaUnusable as err:
        out.fatal("SYN-SCHEMA-UNUSABLE", "$", str(err)[:500], schema_rule)
    except (ValueError, OverflowError, TypeError) as err:
        # jsonschema-rs refuses values JSON Schema cannot express (integers beyond 64 bits...).
        out.fatal("SYN-SCHEMA", "$", f"the payload cannot be validated: {err}"[:500], schema_rule)
    return out


# ---- business keys ---------------------------------------------------------------------------


def _mpan(payload: Any) -> str:
    value = get_ci(get_ci(get_ci(payload, "CommonBlock"), "M0"), "MPANCore")
    return value if isinstance(value, str) else ""


def business_keys(interface: str, event_code: str, payload: Any) -> tuple[BusinessKey, ...]:
    """What a message is about, and its version (the sender's timestamp in UTC).

    IF-021: one key per settlement day (MPAN, measurement quantity, day). IF-041: MPAN, event,
    first reading time. IF-001: MPAN and supplier effective date. The appointment chain: MPAN,
    interface, event and proposed effective date. Other interfaces have none (no ordering check).
    """
    s1 = get_ci(get_ci(payload, "CommonBlock"), "S1")
    sent = parse_timestamp(get_ci(s1, "senderTimestamp"))
    if sent is None:
        return ()
    version = utc_version(sent)
    mpan = _mpan(payload)
    custom = get_ci(payload, "CustomBlock")
    parts: list[str] = []
    if interface == "IF-021":
        b900 = get_ci(custom, "B900")
        mqid = get_ci(get_ci(b900, "MQID"), "measurementQuantityID")
        days = get_ci(b900, "settlementDayConsumptionPeriods")
        for day in days if isinstance(days, list) else []:
            date = get_ci(get_ci(day, "settlementDay"), "settlementDayDate")
            if isinstance(date, str):
                parts.append(f"IF-021|{mpan}|{mqid}|{date[:10]}")
    elif interface == "IF-041":
        readings = get_ci(custom, "B064List")
        first = readings[0] if isinstance(readings, list) and readings else {}
        parts.append(
            f"IF-041|{mpan}|{event_code}|{get_ci(first, 'meterID')}|{get_ci(first, 'cumulativeRegisterReadingDateTime')}"
        )
    elif interface == "IF-001":
        effective = get_ci(get_ci(custom, "B002"), "supplierEffectiveFromDate")
        parts.append(f"IF-001|{mpan}|{effective}")
    elif interface in {"IF-031", "IF-032", "IF-033", "IF-034", "IF-035", "IF-036"}:
        effective = get_ci(
            get_ci(custom, "B070"), "proposedMeteringServiceDIPEffectiveFromDate"
        ) or get_ci(get_ci(custom, "B071"), "proposedDataServiceDIPEffectiveFromDate")
        parts.append(f"{interface}|{mpan}|{event_code}|{effective}")
    return tuple(BusinessKey(key[:120], version) for key in dict.fromkeys(parts))


# ---- contextual ------------------------------------------------------------------------------


class _Out:
    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.findings: list[Finding] = []

    def add(self, severity: Severity, code: str, path: str, text: str, rule: str) -> None:
        self.findings.append(Finding(self.stage, severity, code, path, text, rule))


def contextual(
    interface: str,
    event_code: str,
    payload: dict[str, Any],
    context: ValidationContext,
    keys: tuple[BusinessKey, ...],
    held: Mapping[str, KeyRecord],
) -> list[Finding]:
    """Checks that need the connection and history; ``held`` is the key history for ``keys``."""
    out = _Out(Stage.CONTEXTUAL)
    now = context.now or dt.datetime.now(dt.UTC)
    common = get_ci(payload, "CommonBlock")
    s1 = get_ci(common, "S1")
    env = get_ci(s1, "environmentTag")
    if env != context.environment:
        out.add(
            Severity.FATAL, "CTX-ENVIRONMENT", "$.CommonBlock.S1.environmentTag",
            f"environment {env!r} does not match the connection's {context.environment}", "CTX-ENVIRONMENT@1",
        )  # fmt: skip
        return out.findings
    _parties(out, interface, common, s1, context)
    _mpan_check(out, common, context)
    sent = parse_timestamp(get_ci(s1, "senderTimestamp"))
    if sent is None:
        out.add(
            Severity.ERROR, "CTX-TIMESTAMP", "$.CommonBlock.S1.senderTimestamp",
            "senderTimestamp is not a DT-003 timestamp (YYYY-MM-DDThh:mm:ss+hh:mm)", "CTX-TIMESTAMP@1",
        )  # fmt: skip
    elif sent > now + FUTURE_SKEW:
        out.add(
            Severity.WARNING, "CTX-TIMESTAMP-FUTURE", "$.CommonBlock.S1.senderTimestamp",
            f"senderTimestamp {get_ci(s1, 'senderTimestamp')} is in the future", "CTX-TIMESTAMP@1",
        )  # fmt: skip
    if interface in {"IF-021", "IF-016"}:
        _settlement_days(out, payload, context, now)
    _history(out, s1, keys, held)
    return out.findings


def _parties(out: _Out, interface: str, common: Any, s1: Any, context: ValidationContext) -> None:
    rule = "CTX-PARTIES@1"
    if context.direction == "out":
        sender = get_ci(s1, "senderDIPID")
        if sender not in context.dip_ids:
            out.add(
                Severity.FATAL, "CTX-SENDER", "$.CommonBlock.S1.senderDIPID",
                f"sender {sender!r} is not this connection's DIP ID", rule,
            )  # fmt: skip
        dcp = get_ci(s1, "DIPConnectionProviderID")
        if dcp != context.dcp_id:
            out.add(
                Severity.ERROR, "CTX-DCP", "$.CommonBlock.S1.DIPConnectionProviderID",
                f"DIPConnectionProviderID {dcp!r} should be {context.dcp_id!r} on this connection (MSG1011)", rule,
            )  # fmt: skip
        role = get_ci(s1, "senderRoleID")
        if role != context.role:
            out.add(
                Severity.ERROR, "CTX-ROLE", "$.CommonBlock.S1.senderRoleID",
                f"sender role {role!r} is not this connection's role {context.role}", rule,
            )  # fmt: skip
        return
    a0 = get_ci(common, "A0")
    recipients: set[Any] = set()
    for name in ("primaryRecipients", "secondaryRecipients", "always"):
        listed = get_ci(a0, name)
        if isinstance(listed, list):
            recipients.update(r for r in listed if isinstance(r, str))
    if not recipients & context.dip_ids:
        out.add(
            Severity.ERROR, "CTX-RECIPIENT", "$.CommonBlock.A0",
            f"none of this connection's DIP IDs ({', '.join(sorted(context.dip_ids))}) is a"
            " primary, secondary or always recipient", rule,
        )  # fmt: skip
    expected = RECEIVER_ROLES.get(interface)
    if expected is not None and context.role not in expected:
        out.add(
            Severity.WARNING, "CTX-ROLE", "$.CommonBlock.S0.interfaceID",
            f"{interface} is sent to {', '.join(sorted(expected))}, not to a {context.role}", rule,
        )  # fmt: skip


def _mpan_check(out: _Out, common: Any, context: ValidationContext) -> None:
    severity = context.rules.mpan_check
    mpan = get_ci(get_ci(common, "M0"), "MPANCore")
    if severity is None or not isinstance(mpan, str) or len(mpan) != 13 or not mpan.isdigit():
        return
    if not mpan_check_digit_ok(mpan):
        out.add(
            severity, "CTX-MPAN-CHECK-DIGIT", "$.CommonBlock.M0.MPANCore",
            f"MPAN {mpan} fails its check digit", "CTX-MPAN-CHECK@1",
        )  # fmt: skip


def _settlement_days(out: _Out, payload: Any, context: ValidationContext, now: dt.datetime) -> None:
    rule = "CTX-SETTLEMENT@1"
    days = get_ci(get_ci(get_ci(payload, "CustomBlock"), "B900"), "settlementDayConsumptionPeriods")
    seen_days: set[dt.date] = set()
    for i, entry in enumerate(days if isinstance(days, list) else []):
        base = f"$.CustomBlock.B900.settlementDayConsumptionPeriods[{i}]"
        raw_date = get_ci(get_ci(entry, "settlementDay"), "settlementDayDate")
        start = parse_timestamp(raw_date)
        if start is None:
            out.add(Severity.ERROR, "CTX-SETTLEMENT-DATE", f"{base}.settlementDay.settlementDayDate",
                    f"settlementDayDate {raw_date!r} is not a DT-003 timestamp", rule)  # fmt: skip
            continue
        if start.utcoffset() != dt.timedelta(0) or start.time() != dt.time(0):
            out.add(Severity.ERROR, "CTX-SETTLEMENT-DAY-START", f"{base}.settlementDay.settlementDayDate",
                    f"settlementDayDate {raw_date} is not midnight UTC (ECS1014)", rule)  # fmt: skip
            continue
        day = start.date()
        if day in seen_days:
            out.add(Severity.ERROR, "CTX-SETTLEMENT-DAY-REPEATED", f"{base}.settlementDay.settlementDayDate",
                    f"settlement day {day} appears twice in the message", rule)  # fmt: skip
            continue
        seen_days.add(day)
        end = start + dt.timedelta(days=1)
        if end > now:
            out.add(Severity.ERROR, "CTX-SETTLEMENT-FUTURE", f"{base}.settlementDay.settlementDayDate",
                    f"settlement day {day} has not ended yet", rule)  # fmt: skip
        elif now - end > dt.timedelta(days=context.rules.late_after_days):
            out.add(Severity.INFO, "CTX-LATE", f"{base}.settlementDay.settlementDayDate",
                    f"settlement day {day} is more than {context.rules.late_after_days} days old", rule)  # fmt: skip
        if (local := local_periods(day)) != 48:
            out.add(Severity.INFO, "CTX-CLOCK-CHANGE", f"{base}.settlementDay.settlementDayDate",
                    f"{day} is a clock-change day: the local settlement day has {local} periods; IF-021"
                    " carries the 48 UTC half hours and the conversion is done centrally", rule)  # fmt: skip
        _periods(out, base, start, get_ci(entry, "consumptionPeriods"), rule)


@functools.lru_cache(maxsize=1024)
def _expected_ends(day: dt.date) -> list[str]:
    """The 48 period ends of a UTC settlement day, as a well-formed message writes them."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return [f"{start + HALF_HOUR * n:%Y-%m-%dT%H:%M:%S}+00:00" for n in range(1, 49)]


def _periods(out: _Out, base: str, start: dt.datetime, periods: Any, rule: str) -> None:
    if isinstance(periods, list) and len(periods) == 48:
        # The common case costs one list comparison: the 48 ends in order, written in UTC.
        sps = [p.get("sp") if isinstance(p, dict) else None for p in periods]
        if sps == _expected_ends(start.date()):
            return
    ends: set[dt.datetime] = set()
    for j, period in enumerate(periods if isinstance(periods, list) else []):
        raw = get_ci(period, "sp")
        path = f"{base}.consumptionPeriods[{j}].sp"
        end = parse_timestamp(raw)
        if end is None:
            out.add(
                Severity.ERROR,
                "CTX-PERIOD-TIME",
                path,
                f"sp {raw!r} is not a DT-003 timestamp",
                rule,
            )
            continue
        offset = end - start
        if offset <= dt.timedelta(0) or offset > dt.timedelta(days=1) or offset % HALF_HOUR:
            out.add(Severity.ERROR, "CTX-PERIOD-OUTSIDE-DAY", path,
                    f"sp {raw} is not the end of a half hour of the settlement day starting {start:%Y-%m-%d}", rule)  # fmt: skip
            continue
        if end in ends:
            out.add(Severity.ERROR, "CTX-PERIOD-REPEATED", path, f"sp {raw} appears twice", rule)
            continue
        ends.add(end)
    if len(ends) != 48:
        missing = [
            f"{start + HALF_HOUR * n:%H:%M}"
            for n in range(1, 49)
            if start + HALF_HOUR * n not in ends
        ]
        out.add(Severity.ERROR, "CTX-PERIOD-COUNT", f"{base}.consumptionPeriods",
                f"{len(ends)} periods; a UTC settlement day has 48 (missing the half hours ending"
                f" {', '.join(missing[:10])}{'...' if len(missing) > 10 else ''})", rule)  # fmt: skip


def _history(
    out: _Out, s1: Any, keys: tuple[BusinessKey, ...], held: Mapping[str, KeyRecord]
) -> None:
    rule = "CTX-HISTORY@1"
    reference = get_ci(s1, "senderUniqueReference")
    for key in keys:
        record = held.get(key.key)
        if record is None:
            continue
        if record.sender_reference == reference:
            out.add(Severity.WARNING, "CTX-DUPLICATE", "$.CommonBlock.S1.senderUniqueReference",
                    f"{key.key} was already received with this sender reference", rule)  # fmt: skip
        elif record.version > key.version:
            out.add(Severity.WARNING, "CTX-OUT-OF-ORDER", "$.CommonBlock.S1.senderTimestamp",
                    f"{key.key}: a newer version ({record.version}) was already received; this one is {key.version}", rule)  # fmt: skip
        elif record.version == key.version:
            out.add(Severity.WARNING, "CTX-VERSION-CONFLICT", "$.CommonBlock.S1.senderTimestamp",
                    f"{key.key}: another message ({record.sender_reference}) has the same version {key.version}", rule)  # fmt: skip


# ---- business --------------------------------------------------------------------------------

# Each tenant rule: its id (with version), default setting, and a check yielding (path, text).
BUSINESS_RULES: dict[str, RuleSetting] = {
    "BUS-NEGATIVE-CONSUMPTION": RuleSetting(True, Severity.WARNING),
    "BUS-ZERO-DAY": RuleSetting(True, Severity.INFO),
    "BUS-PERIOD-MAX-KWH": RuleSetting(False, Severity.WARNING, {"max_kwh": "1000.000"}),
    "BUS-ESTIMATED-SHARE": RuleSetting(False, Severity.INFO, {"max_share": 0.5}),
    "BUS-NEGATIVE-READING": RuleSetting(True, Severity.WARNING),
}
RULE_VERSIONS = dict.fromkeys(BUSINESS_RULES, 1)


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _days(payload: Any) -> Iterator[tuple[int, list[Any]]]:
    days = get_ci(get_ci(get_ci(payload, "CustomBlock"), "B900"), "settlementDayConsumptionPeriods")
    for i, entry in enumerate(days if isinstance(days, list) else []):
        periods = get_ci(entry, "consumptionPeriods")
        yield i, periods if isinstance(periods, list) else []


def _values(periods: list[Any]) -> list[Any]:
    return [p.get("v") if isinstance(p, dict) else None for p in periods]


def _is_zero(value: Any) -> bool:
    # Values are 9.3 decimal strings once the schema passed: zero is any mix of 0, '.' and '-'.
    return isinstance(value, str) and bool(value) and not value.strip("-0.")


def _check(
    rule_id: str, setting: RuleSetting, interface: str, payload: Any
) -> Iterator[tuple[str, str]]:
    """What one rule finds, rule by rule. For IF-021, ``business`` finds the same in one pass
    (``_if021_findings``); this stays the plain statement of each rule, which a test holds the
    single pass to."""
    base = "$.CustomBlock.B900.settlementDayConsumptionPeriods"
    if interface == "IF-021" and rule_id == "BUS-NEGATIVE-CONSUMPTION":
        for i, periods in _days(payload):
            for j, raw in enumerate(_values(periods)):
                if isinstance(raw, str) and raw.startswith("-") and not _is_zero(raw):
                    value = _decimal(raw)
                    if value is not None and value < 0:
                        yield (
                            f"{base}[{i}].consumptionPeriods[{j}].v",
                            f"negative consumption {value} kWh",
                        )
    elif interface == "IF-021" and rule_id == "BUS-ZERO-DAY":
        for i, periods in _days(payload):
            values = _values(periods)
            if values and all(_is_zero(v) for v in values):
                yield f"{base}[{i}]", "every period of the day is zero"
    elif interface == "IF-021" and rule_id == "BUS-PERIOD-MAX-KWH":
        limit = _decimal(str(setting.params.get("max_kwh", "1000.000")))
        for i, periods in _days(payload):
            for j, period in enumerate(periods):
                value = _decimal(get_ci(period, "v"))
                if value is not None and limit is not None and value > limit:
                    yield (
                        f"{base}[{i}].consumptionPeriods[{j}].v",
                        f"{value} kWh exceeds {limit} kWh",
                    )
    elif interface == "IF-021" and rule_id == "BUS-ESTIMATED-SHARE":
        share = float(setting.params.get("max_share", 0.5))
        for i, periods in _days(payload):
            estimated = sum(1 for p in periods if get_ci(p, "q") != "A")
            if periods and estimated / len(periods) > share:
                yield (
                    f"{base}[{i}]",
                    f"{estimated} of {len(periods)} periods are not actual (over {share:.0%})",
                )
    elif interface == "IF-041" and rule_id == "BUS-NEGATIVE-READING":
        readings = get_ci(get_ci(payload, "CustomBlock"), "B064List")
        for j, reading in enumerate(readings if isinstance(readings, list) else []):
            value = _decimal(get_ci(reading, "cumulativeRegisterReading"))
            if value is not None and value < 0:
                yield (
                    f"$.CustomBlock.B064List[{j}].cumulativeRegisterReading",
                    f"negative register reading {value}",
                )


def _if021_findings(
    payload: Any, enabled: Mapping[str, RuleSetting]
) -> dict[str, list[tuple[str, str]]]:
    """What ``_check`` yields for each enabled IF-021 rule, by rule id, in one pass over the days
    and one list of each day's values (each rule walked every day and period on its own)."""
    base = "$.CustomBlock.B900.settlementDayConsumptionPeriods"
    found: dict[str, list[tuple[str, str]]] = {rule_id: [] for rule_id in enabled}
    negative = found.get("BUS-NEGATIVE-CONSUMPTION")
    zero_day = found.get("BUS-ZERO-DAY")
    too_high = found.get("BUS-PERIOD-MAX-KWH")
    estimated = found.get("BUS-ESTIMATED-SHARE")
    limit = share = None
    if too_high is not None:
        limit = _decimal(str(enabled["BUS-PERIOD-MAX-KWH"].params.get("max_kwh", "1000.000")))
    if estimated is not None:
        share = float(enabled["BUS-ESTIMATED-SHARE"].params.get("max_share", 0.5))
    for i, periods in _days(payload):
        values = _values(periods)
        if negative is not None:
            try:
                minus = "-" in "".join(values)  # in C: most days have no value to look at
            except TypeError:
                minus = True  # a value that is not text: look at each
            if minus:
                for j, raw in enumerate(values):
                    if isinstance(raw, str) and raw.startswith("-") and not _is_zero(raw):
                        value = _decimal(raw)
                        if value is not None and value < 0:
                            negative.append(
                                (
                                    f"{base}[{i}].consumptionPeriods[{j}].v",
                                    f"negative consumption {value} kWh",
                                )
                            )
        if zero_day is not None and values and all(_is_zero(v) for v in values):
            zero_day.append((f"{base}[{i}]", "every period of the day is zero"))
        if too_high is not None:
            for j, period in enumerate(periods):
                value = _decimal(get_ci(period, "v"))
                if value is not None and limit is not None and value > limit:
                    too_high.append(
                        (
                            f"{base}[{i}].consumptionPeriods[{j}].v",
                            f"{value} kWh exceeds {limit} kWh",
                        )
                    )
        if estimated is not None and share is not None:
            count = sum(1 for p in periods if get_ci(p, "q") != "A")
            if periods and count / len(periods) > share:
                estimated.append(
                    (
                        f"{base}[{i}]",
                        f"{count} of {len(periods)} periods are not actual (over {share:.0%})",
                    )
                )
    return found


def business(interface: str, payload: dict[str, Any], context: ValidationContext) -> list[Finding]:
    """The tenant's rules (``context.rules.business`` over the defaults in BUSINESS_RULES)."""
    out = _Out(Stage.BUSINESS)
    enabled = {
        rule_id: setting
        for rule_id, default in BUSINESS_RULES.items()
        if (setting := context.rules.rule(rule_id, default)).enabled
    }
    found = (
        _if021_findings(payload, enabled)
        if interface == "IF-021"
        else {
            rule_id: list(_check(rule_id, setting, interface, payload))
            for rule_id, setting in enabled.items()
        }
    )
    for rule_id, setting in enabled.items():
        rule = f"{rule_id}@{RULE_VERSIONS[rule_id]}"
        for path, text in found.get(rule_id, ()):
            out.add(setting.severity, rule_id, path, text, rule)
    return out.findings


def rules_from_json(data: object) -> dict[str, RuleSetting]:
    """Parse stored business rules ``{rule id: {"enabled", "severity", "params"}}``.

    Raises ``ValueError`` naming the rule and the problem (unknown rule, bad severity...).
    """
    if not isinstance(data, dict):
        raise ValueError("business rules must be an object of rule id -> setting")
    out: dict[str, RuleSetting] = {}
    for rule_id, raw in data.items():
        default = BUSINESS_RULES.get(rule_id)
        if default is None:
            raise ValueError(
                f"unknown business rule {rule_id!r} (known: {', '.join(BUSINESS_RULES)})"
            )
        if not isinstance(raw, dict) or set(raw) - {"enabled", "severity", "params"}:
            raise ValueError(f"{rule_id}: a setting has only enabled, severity and params")
        enabled = raw.get("enabled", default.enabled)
        if not isinstance(enabled, bool):
            raise ValueError(f"{rule_id}: enabled must be true or false")
        try:
            severity = Severity(raw.get("severity", default.severity))
        except ValueError:
            raise ValueError(f"{rule_id}: severity must be one of {', '.join(Severity)}") from None
        params = raw.get("params", {})
        if not isinstance(params, dict) or set(params) - set(default.params):
            raise ValueError(
                f"{rule_id}: params may hold only {', '.join(default.params) or 'nothing'}"
            )
        out[rule_id] = RuleSetting(enabled, severity, {**default.params, **params})
    return out
