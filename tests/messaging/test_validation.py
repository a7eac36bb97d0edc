"""Staged validation (messaging.validation) with Busbar's own schemas: each stage's rules, both
sides of each boundary. No database: the package is a library.

Messages come from dipsim's builders (the demo's traffic), so these tests also show that Busbar
accepts what the demo sends.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dipsim import messages as gen
from messaging.validation import (
    Finding,
    KeyRecord,
    RuleSetting,
    SchemaRegistry,
    Severity,
    Stage,
    TenantRules,
    ValidationContext,
    stages,
    validate_batch,
    validate_message,
)
from messaging.validation.stages import local_periods, mpan_check_digit_ok, rules_from_json

ACME, SDS, REGS, LDSO = "1000000001", "3000000001", "4000000001", "2000000020"
DAY = dt.date(2026, 3, 10)
NOW = dt.datetime(2026, 3, 12, 9, 0, tzinfo=dt.UTC)
REGISTRY = SchemaRegistry.builtin()


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def if021(
    day: dt.date = DAY, *, seed: int = 1, sent: dt.datetime | None = None, **kw: Any
) -> dict[str, Any]:
    rng = random.Random(seed)
    kw.setdefault("mpan", gen.make_mpan(rng))
    payload = gen.if021(sender=SDS, day=day, rng=rng, recipients=[ACME], distributor=LDSO, **kw)
    end = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(
        days=kw.get("days", 1)
    )
    payload["CommonBlock"]["S1"]["senderTimestamp"] = stamp(sent or end + dt.timedelta(hours=2))
    return payload


def context(**kw: Any) -> ValidationContext:
    base: dict[str, Any] = {
        "dip_ids": frozenset({ACME}),
        "role": "SUP",
        "environment": "UIT",
        "now": NOW,
    }
    base.update(kw)
    return ValidationContext(**base)


def codes(outcome: Any, severity: Severity | None = None) -> list[str]:
    return [f.code for f in outcome.findings if severity is None or f.severity is severity]


def only(outcome: Any, code: str) -> Finding:
    found = [f for f in outcome.findings if f.code == code]
    assert len(found) == 1, outcome.findings
    return found[0]


def periods(payload: dict[str, Any], day: int = 0) -> list[dict[str, Any]]:
    return payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][day][
        "consumptionPeriods"
    ]


# ---- the outcome and the finding ----------------------------------------------------------------


def test_a_finding_has_exactly_the_agreed_attributes():
    names = [f.name for f in dataclasses.fields(Finding)]
    assert names == ["stage", "severity", "code", "path", "text", "rule"]


def test_a_demo_if021_passes_every_stage_with_no_findings():
    outcome = validate_message(json.dumps(if021()).encode(), context=context(), registry=REGISTRY)
    assert outcome.findings == ()
    assert outcome.ok
    assert (outcome.interface, outcome.schema_version, outcome.event_code) == (
        "IF-021",
        "011",
        "[ActivePower]",
    )
    assert outcome.spec_version == "busbar-builtin"
    assert outcome.business_key.startswith("IF-021|")
    assert outcome.payload is not None


def test_every_demo_interface_passes_the_syntactic_stage():
    rng = random.Random(3)
    mpan = gen.make_mpan(rng)
    effective = "2026-04-01T00:00:00+00:00"
    payloads = [
        if021(),
        gen.if041(sender=SDS, role="SDS", mpan=mpan, read_at=NOW, rng=rng, recipients=[ACME]),
        gen.if001(sender=REGS, mpan=mpan, incoming=(ACME, "ACME"), effective=effective),
        gen.if001(
            sender=REGS,
            mpan=mpan,
            incoming=(ACME, "ACME"),
            effective=effective,
            outgoing=("1000000009", "OLDS"),
        ),
    ]
    for interface in ("IF-031", "IF-032", "IF-033", "IF-034", "IF-035", "IF-036"):
        for service in ("MS", "DS"):
            payloads.append(
                gen.appointment(
                    interface,
                    service=service,
                    sender=REGS,
                    role="REGS",
                    mpan=mpan,
                    supplier=(ACME, "ACME"),
                    provider=(SDS, "SDSP"),
                    effective=effective,
                    response=("A", None),
                )
            )
    for outcome in validate_batch(
        payloads, context=context(), registry=REGISTRY, stages=("syntactic",)
    ):
        assert outcome.findings == (), (outcome.interface, outcome.event_code, outcome.findings)


# ---- syntactic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "SYN-JSON"),
        (b"[1, 2]", "SYN-NOT-OBJECT"),
        (b'"text"', "SYN-NOT-OBJECT"),
        (b"{}", "SYN-S0"),
        (
            b'{"CommonBlock": {"S0": {"interfaceID": "IF-021", "schemaVersion": 11, "eventCode": "[ActivePower]"}}}',
            "SYN-S0",
        ),
    ],
)
def test_unreadable_messages_are_fatal_at_the_syntactic_stage(raw, code):
    outcome = validate_message(raw, context=context(), registry=REGISTRY)
    assert not outcome.ok
    assert outcome.stopped_at is Stage.SYNTACTIC
    assert {(f.code, f.severity) for f in outcome.findings} == {(code, Severity.FATAL)}


def test_the_wire_item_is_unwrapped():
    item = json.dumps({"payload": if021()}).encode()
    assert validate_message(item, context=context(), registry=REGISTRY).ok


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("interfaceID", "IF-999", "SYN-UNKNOWN-INTERFACE"),
        ("schemaVersion", "010", "SYN-UNKNOWN-SCHEMA-VERSION"),
        ("eventCode", "[ActivePowr]", "SYN-UNKNOWN-EVENT"),
    ],
)
def test_the_registry_must_know_interface_schema_version_and_event_code(field, value, code):
    payload = if021()
    payload["CommonBlock"]["S0"][field] = value
    outcome = validate_message(payload, context=context(), registry=REGISTRY)
    finding = only(outcome, code)
    assert finding.path == f"$.CommonBlock.S0.{field}"
    assert finding.severity is Severity.FATAL
    assert codes(outcome) == [code]  # later stages did not run


def test_a_message_on_another_interfaces_channel_is_refused():
    on_021 = validate_message(if021(), context=context(channel="IF-021"), registry=REGISTRY)
    on_041 = validate_message(if021(), context=context(channel="IF-041"), registry=REGISTRY)
    assert on_021.ok
    assert codes(on_041) == ["SYN-CHANNEL"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p["CommonBlock"]["S1"].pop("senderRoleID"), "$.CommonBlock.S1"),
        (lambda p: p["CustomBlock"].__setitem__("B999", {}), "$.CustomBlock"),
        (
            lambda p: p["CommonBlock"]["M0"].__setitem__("MPANCore", "12345678901X3"),
            "$.CommonBlock.M0.MPANCore",
        ),
        (
            lambda p: p["CommonBlock"]["M0"].__setitem__("GSPGroupID", "_I"),
            "$.CommonBlock.M0.GSPGroupID",
        ),
        (
            lambda p: periods(p)[3].__setitem__("v", "1.5"),
            "$.CustomBlock.B900.settlementDayConsumptionPeriods[0].consumptionPeriods[3].v",
        ),
        (
            lambda p: p["CommonBlock"]["S1"].__setitem__("senderTimestamp", "2026-03-10T10:00:00Z"),
            "$.CommonBlock.S1.senderTimestamp",
        ),
    ],
)
def test_schema_failures_are_fatal_with_the_json_path(mutate, path):
    payload = if021()
    mutate(payload)
    outcome = validate_message(payload, context=context(), registry=REGISTRY)
    assert not outcome.ok
    assert outcome.stopped_at is Stage.SYNTACTIC
    assert {f.code for f in outcome.findings} == {"SYN-SCHEMA"}
    assert path in [f.path for f in outcome.findings]
    assert all(f.rule == "SCHEMA@busbar-builtin" for f in outcome.findings)


def test_a_period_value_at_the_decimal_limits():
    payload = if021()
    periods(payload)[0]["v"] = "-999999999.999"
    assert validate_message(payload, context=context(), registry=REGISTRY, stages=("syntactic",)).ok
    periods(payload)[0]["v"] = "1000000000.000"
    assert not validate_message(
        payload, context=context(), registry=REGISTRY, stages=("syntactic",)
    ).ok


# ---- contextual ---------------------------------------------------------------------------------


def test_the_environment_must_match_the_connection_and_stops_the_message():
    outcome = validate_message(if021(env="PRD"), context=context(), registry=REGISTRY)
    assert only(outcome, "CTX-ENVIRONMENT").severity is Severity.FATAL
    assert outcome.stopped_at is Stage.CONTEXTUAL
    assert not any(f.stage is Stage.BUSINESS for f in outcome.findings)


@pytest.mark.parametrize("block", ["primaryRecipients", "secondaryRecipients", "always"])
def test_our_dip_id_may_be_any_kind_of_recipient(block):
    payload = if021()
    payload["CommonBlock"]["A0"] = {
        "primaryRecipients": [],
        "secondaryRecipients": [],
        "always": [],
    }
    payload["CommonBlock"]["A0"][block] = [LDSO, ACME]
    assert "CTX-RECIPIENT" not in codes(
        validate_message(payload, context=context(), registry=REGISTRY)
    )


def test_a_message_not_addressed_to_us_is_an_error():
    payload = if021()
    payload["CommonBlock"]["A0"]["primaryRecipients"] = [LDSO, None]
    outcome = validate_message(payload, context=context(), registry=REGISTRY)
    assert only(outcome, "CTX-RECIPIENT").severity is Severity.ERROR
    assert not outcome.ok
    assert outcome.stopped_at is None  # an error does not stop the business stage


def test_a_role_the_interface_is_not_sent_to_is_a_warning():
    assert "CTX-ROLE" not in codes(
        validate_message(if021(), context=context(role="LDSO"), registry=REGISTRY)
    )
    outcome = validate_message(if021(), context=context(role="REGS"), registry=REGISTRY)
    assert only(outcome, "CTX-ROLE").severity is Severity.WARNING
    assert outcome.ok


def test_outbound_the_sender_must_be_the_connection_in_its_role():
    ours = context(dip_ids=frozenset({SDS}), role="SDS", direction="out")
    assert validate_message(if021(), context=ours, registry=REGISTRY).ok
    other = context(dip_ids=frozenset({"3000000002"}), role="SDS", direction="out")
    assert (
        only(validate_message(if021(), context=other, registry=REGISTRY), "CTX-SENDER").severity
        is Severity.FATAL
    )
    wrong_role = context(dip_ids=frozenset({SDS}), role="ADS", direction="out")
    assert codes(validate_message(if021(), context=wrong_role, registry=REGISTRY)) == ["CTX-ROLE"]


def test_outbound_the_dcp_id_must_be_the_connections():
    payload = if021()
    payload["CommonBlock"]["S1"]["DIPConnectionProviderID"] = "9000000001"
    as_dcp = context(dip_ids=frozenset({SDS}), role="SDS", direction="out", dcp_id="9000000001")
    assert validate_message(payload, context=as_dcp, registry=REGISTRY).ok
    direct = context(dip_ids=frozenset({SDS}), role="SDS", direction="out")
    assert codes(validate_message(payload, context=direct, registry=REGISTRY)) == ["CTX-DCP"]
    assert codes(validate_message(if021(), context=as_dcp, registry=REGISTRY)) == ["CTX-DCP"]


def test_mpan_check_digit_known_values():
    assert mpan_check_digit_ok("2000056535971")
    assert mpan_check_digit_ok("1900012374324")
    assert not mpan_check_digit_ok("2000056535972")
    assert not mpan_check_digit_ok("1234567890123")


def test_a_bad_check_digit_is_a_warning_by_default_and_configurable_per_tenant():
    good = if021(mpan="2000056535971")
    bad = if021(mpan="2000056535972")
    assert validate_message(good, context=context(), registry=REGISTRY).findings == ()
    default = validate_message(bad, context=context(), registry=REGISTRY)
    finding = only(default, "CTX-MPAN-CHECK-DIGIT")
    assert (finding.severity, finding.path, finding.rule) == (
        Severity.WARNING,
        "$.CommonBlock.M0.MPANCore",
        "CTX-MPAN-CHECK@1",
    )
    assert default.ok
    strict = validate_message(
        bad, context=context(rules=TenantRules(mpan_check=Severity.ERROR)), registry=REGISTRY
    )
    assert not strict.ok
    off = validate_message(
        bad, context=context(rules=TenantRules(mpan_check=None)), registry=REGISTRY
    )
    assert off.findings == ()


def test_a_settlement_day_must_start_at_midnight_utc():
    payload = if021()
    day = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0]["settlementDay"]
    day["settlementDayDate"] = "2026-03-10T01:00:00+00:00"
    assert "CTX-SETTLEMENT-DAY-START" in codes(
        validate_message(payload, context=context(), registry=REGISTRY)
    )
    day["settlementDayDate"] = "2026-03-10T00:00:00+01:00"
    assert "CTX-SETTLEMENT-DAY-START" in codes(
        validate_message(payload, context=context(), registry=REGISTRY)
    )


def test_a_utc_day_has_exactly_48_periods():
    short = validate_message(if021(fault="short_day"), context=context(), registry=REGISTRY)
    finding = only(short, "CTX-PERIOD-COUNT")
    assert finding.severity is Severity.ERROR
    assert "47 periods" in finding.text
    assert "00:00" in finding.text  # the missing half hour ends at midnight
    assert not short.ok


def test_period_ends_are_compared_as_instants_not_as_text():
    payload = if021()
    periods(payload)[0]["sp"] = "2026-03-10T01:30:00+01:00"  # 00:30 UTC, written in another offset
    assert validate_message(payload, context=context(), registry=REGISTRY).findings == ()


@pytest.mark.parametrize(
    ("sp", "code"),
    [
        (
            "2026-03-10T00:00:00+00:00",
            "CTX-PERIOD-OUTSIDE-DAY",
        ),  # the start of the day is no period end
        ("2026-03-11T00:30:00+00:00", "CTX-PERIOD-OUTSIDE-DAY"),
        ("2026-03-10T00:45:00+00:00", "CTX-PERIOD-OUTSIDE-DAY"),
        ("2026-03-10T01:00:00+00:00", "CTX-PERIOD-REPEATED"),
        ("2026-03-10 00:30:00+00:00", "CTX-PERIOD-TIME"),
    ],
)
def test_period_ends_must_be_distinct_half_hours_of_the_day(sp, code):
    payload = if021()
    periods(payload)[0]["sp"] = sp
    outcome = validate_message(payload, context=context(), registry=REGISTRY)
    assert code in codes(outcome, Severity.ERROR)
    assert "CTX-PERIOD-COUNT" in codes(outcome)


def test_the_last_period_ends_at_the_next_midnight():
    assert periods(if021())[-1]["sp"] == "2026-03-11T00:00:00+00:00"


def test_a_day_that_has_not_ended_is_an_error():
    end = dt.datetime(2026, 3, 11, tzinfo=dt.UTC)
    just_ended = validate_message(if021(sent=end), context=context(now=end), registry=REGISTRY)
    assert "CTX-SETTLEMENT-FUTURE" not in codes(just_ended)
    early = end - dt.timedelta(seconds=1)
    not_yet = validate_message(if021(sent=early), context=context(now=early), registry=REGISTRY)
    assert "CTX-SETTLEMENT-FUTURE" in codes(not_yet, Severity.ERROR)


def test_late_days_are_reported_as_info_after_the_tenants_limit():
    end = dt.datetime(2026, 3, 11, tzinfo=dt.UTC)
    at_limit = context(now=end + dt.timedelta(days=14))
    assert "CTX-LATE" not in codes(validate_message(if021(), context=at_limit, registry=REGISTRY))
    past = context(now=end + dt.timedelta(days=14, seconds=1))
    late = validate_message(if021(), context=past, registry=REGISTRY)
    assert only(late, "CTX-LATE").severity is Severity.INFO
    assert late.ok
    lenient = context(
        now=end + dt.timedelta(days=14, seconds=1), rules=TenantRules(late_after_days=30)
    )
    assert "CTX-LATE" not in codes(validate_message(if021(), context=lenient, registry=REGISTRY))


def test_local_settlement_day_lengths():
    assert local_periods(dt.date(2026, 3, 28)) == 48
    assert local_periods(dt.date(2026, 3, 29)) == 46
    assert local_periods(dt.date(2026, 10, 25)) == 50
    assert local_periods(dt.date(2026, 10, 26)) == 48


@pytest.mark.parametrize(
    ("day", "local"), [(dt.date(2026, 3, 29), 46), (dt.date(2026, 10, 25), 50)]
)
def test_clock_change_days_are_info_and_still_need_48_utc_periods(day, local):
    now = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=2)
    outcome = validate_message(if021(day), context=context(now=now), registry=REGISTRY)
    finding = only(outcome, "CTX-CLOCK-CHANGE")
    assert finding.severity is Severity.INFO
    assert f"{local} periods" in finding.text
    assert outcome.ok
    short = validate_message(
        if021(day, fault="short_day"), context=context(now=now), registry=REGISTRY
    )
    assert "CTX-PERIOD-COUNT" in codes(short)


def test_the_day_before_a_clock_change_is_ordinary():
    day = dt.date(2026, 3, 28)
    now = dt.datetime(2026, 3, 30, tzinfo=dt.UTC)
    assert validate_message(if021(day), context=context(now=now), registry=REGISTRY).findings == ()


def test_a_sender_timestamp_in_the_future_is_a_warning():
    ahead = validate_message(
        if021(sent=NOW + dt.timedelta(minutes=6)), context=context(), registry=REGISTRY
    )
    assert "CTX-TIMESTAMP-FUTURE" in codes(ahead, Severity.WARNING)
    within_skew = validate_message(
        if021(sent=NOW + dt.timedelta(minutes=5)), context=context(), registry=REGISTRY
    )
    assert "CTX-TIMESTAMP-FUTURE" not in codes(within_skew)


# ---- business-key history -----------------------------------------------------------------------


class History:
    """A key history kept in a dict, counting its calls (the store implements the real one)."""

    def __init__(self, held: dict[str, KeyRecord] | None = None) -> None:
        self.held = held or {}
        self.calls: list[list[str]] = []

    def __call__(self, keys: Sequence[str], /) -> Mapping[str, KeyRecord]:
        self.calls.append(list(keys))
        return {k: self.held[k] for k in keys if k in self.held}


def test_duplicates_and_out_of_order_versions_by_business_key():
    first = if021(sent=NOW - dt.timedelta(hours=3))
    key = validate_message(first, context=context(), registry=REGISTRY).business_keys[0]
    reference = first["CommonBlock"]["S1"]["senderUniqueReference"]
    history = History({key.key: KeyRecord(key.version, reference)})
    again = validate_message(first, context=context(history=history), registry=REGISTRY)
    assert only(again, "CTX-DUPLICATE").severity is Severity.WARNING
    assert history.calls == [[key.key]]

    older = copy.deepcopy(first)
    older["CommonBlock"]["S1"]["senderUniqueReference"] = reference + "b"
    older["CommonBlock"]["S1"]["senderTimestamp"] = stamp(NOW - dt.timedelta(hours=4))
    assert "CTX-OUT-OF-ORDER" in codes(
        validate_message(older, context=context(history=history), registry=REGISTRY)
    )

    same_version = copy.deepcopy(first)
    same_version["CommonBlock"]["S1"]["senderUniqueReference"] = reference + "c"
    assert "CTX-VERSION-CONFLICT" in codes(
        validate_message(same_version, context=context(history=history), registry=REGISTRY)
    )

    newer = copy.deepcopy(first)
    newer["CommonBlock"]["S1"]["senderUniqueReference"] = reference + "d"
    newer["CommonBlock"]["S1"]["senderTimestamp"] = stamp(NOW - dt.timedelta(hours=2))
    assert (
        validate_message(newer, context=context(history=history), registry=REGISTRY).findings == ()
    )


def test_a_batch_asks_the_history_once_and_sees_its_own_earlier_messages():
    newer = if021(sent=NOW - dt.timedelta(hours=1))
    older = copy.deepcopy(newer)
    older["CommonBlock"]["S1"]["senderUniqueReference"] += "x"
    older["CommonBlock"]["S1"]["senderTimestamp"] = stamp(NOW - dt.timedelta(hours=2))
    other = if021(seed=2)
    history = History()
    outcomes = validate_batch(
        [newer, older, newer, other], context=context(history=history), registry=REGISTRY
    )
    assert len(history.calls) == 1
    assert len(history.calls[0]) == 2  # two distinct keys
    assert [codes(o) for o in outcomes] == [[], ["CTX-OUT-OF-ORDER"], ["CTX-DUPLICATE"], []]


def test_a_multi_day_message_has_a_key_per_day():
    outcome = validate_message(if021(days=2), context=context(), registry=REGISTRY)
    assert [k.key[-10:] for k in outcome.business_keys] == ["2026-03-10", "2026-03-11"]


# ---- business -----------------------------------------------------------------------------------


def test_negative_consumption_is_a_warning_that_does_not_stop_the_message():
    outcome = validate_message(if021(fault="negative"), context=context(), registry=REGISTRY)
    finding = only(outcome, "BUS-NEGATIVE-CONSUMPTION")
    assert (finding.stage, finding.severity, finding.rule) == (
        Stage.BUSINESS,
        Severity.WARNING,
        "BUS-NEGATIVE-CONSUMPTION@1",
    )
    assert finding.path.endswith("consumptionPeriods[24].v")
    assert outcome.ok


def test_minus_zero_is_not_negative():
    payload = if021()
    periods(payload)[5]["v"] = "-0.000"
    assert validate_message(payload, context=context(), registry=REGISTRY).findings == ()


def test_tenant_rules_switch_and_grade_the_business_rules():
    negative = if021(fault="negative")
    off = TenantRules(business=rules_from_json({"BUS-NEGATIVE-CONSUMPTION": {"enabled": False}}))
    assert validate_message(negative, context=context(rules=off), registry=REGISTRY).findings == ()
    strict = TenantRules(
        business=rules_from_json({"BUS-NEGATIVE-CONSUMPTION": {"severity": "error"}})
    )
    assert not validate_message(negative, context=context(rules=strict), registry=REGISTRY).ok


def test_a_zero_day_is_info():
    payload = if021()
    for period in periods(payload):
        period["v"] = "0.000"
    assert (
        only(
            validate_message(payload, context=context(), registry=REGISTRY), "BUS-ZERO-DAY"
        ).severity
        is Severity.INFO
    )
    periods(payload)[0]["v"] = "0.001"
    assert validate_message(payload, context=context(), registry=REGISTRY).findings == ()


def test_period_maximum_is_off_by_default_and_has_an_inclusive_limit():
    payload = if021()
    periods(payload)[0]["v"] = "5.000"
    assert validate_message(payload, context=context(), registry=REGISTRY).findings == ()
    rules = TenantRules(
        business=rules_from_json(
            {"BUS-PERIOD-MAX-KWH": {"enabled": True, "params": {"max_kwh": "5.000"}}}
        )
    )
    assert validate_message(payload, context=context(rules=rules), registry=REGISTRY).findings == ()
    periods(payload)[0]["v"] = "5.001"
    assert codes(validate_message(payload, context=context(rules=rules), registry=REGISTRY)) == [
        "BUS-PERIOD-MAX-KWH"
    ]


def test_estimated_share_rule():
    payload = if021()
    for period in periods(payload)[:24]:
        period["q"] = "E"
    rules = TenantRules(
        business={"BUS-ESTIMATED-SHARE": RuleSetting(True, Severity.INFO, {"max_share": 0.5})}
    )
    assert validate_message(payload, context=context(rules=rules), registry=REGISTRY).findings == ()
    periods(payload)[24]["q"] = "E"
    assert codes(validate_message(payload, context=context(rules=rules), registry=REGISTRY)) == [
        "BUS-ESTIMATED-SHARE"
    ]


def test_the_if021_rules_in_one_pass_find_what_each_rule_finds_on_its_own():
    # business() walks an IF-021 message's days once for every rule; stages._check states each
    # rule on its own and is the reference. Messages with every kind of value the rules look at.
    rng = random.Random(8)
    odd = ["-0.000", "0.000", "-1.500", "-0", "1001.000", "5.001", "-.", "x", None, 5, -3, "", "-"]
    every_rule = {
        rule_id: RuleSetting(True, Severity.INFO, {"max_kwh": "5.000"} if "MAX" in rule_id else {})
        for rule_id in stages.BUSINESS_RULES
    }
    found: set[str] = set()
    for seed in range(60):
        payload = if021(seed=seed, days=2)
        for day in range(2):
            values = periods(payload, day)
            if seed % 5 == 0:
                for period in values:
                    period["v"] = rng.choice(["0.000", "-0.000", "0"])
            if seed % 3 == 0:
                for period in values[: rng.randint(20, 30)]:
                    period["q"] = "E"
            for _ in range(rng.randint(0, 8)):
                period = rng.choice(values)
                period[rng.choice(["v", "v", "q", "V"])] = rng.choice([*odd, "E", "A"])
            if seed % 7 == 0:
                values[rng.randrange(48)] = rng.choice([None, "x", 3])  # type: ignore[call-overload]
        for rules in ({}, every_rule):
            ctx = context(rules=TenantRules(business=rules))
            expected = [
                (rule_id, path, text)
                for rule_id, default in stages.BUSINESS_RULES.items()
                if (setting := ctx.rules.rule(rule_id, default)).enabled
                for path, text in stages._check(rule_id, setting, "IF-021", payload)
            ]
            got = [(f.code, f.path, f.text) for f in stages.business("IF-021", payload, ctx)]
            assert got == expected
            found.update(code for code, _, _ in got)
    assert found == set(stages.BUSINESS_RULES) - {"BUS-NEGATIVE-READING"}  # each rule found some


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"BUS-NOPE": {}}, "unknown business rule"),
        ({"BUS-ZERO-DAY": {"severity": "loud"}}, "severity must be one of"),
        ({"BUS-ZERO-DAY": {"enabled": "yes"}}, "enabled must be true or false"),
        ({"BUS-ZERO-DAY": {"params": {"x": 1}}}, "params may hold only"),
        ({"BUS-ZERO-DAY": {"colour": "red"}}, "enabled, severity and params"),
        ([], "must be an object"),
    ],
)
def test_bad_rule_settings_are_refused_with_a_clear_error(rules, message):
    with pytest.raises(ValueError, match=message):
        rules_from_json(rules)
