"""The outbound envelope: CommonBlock, sender references, DT-003 timestamps, MPAN check digits and
status entries, checked against the formats of the DIP API v2.1.0."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from messaging.dip.envelope import (
    EnvelopeError,
    build_common_block,
    build_payload,
    dip_timestamp,
    event_code,
    mpan_block,
    mpan_check_digit,
    mpan_check_digit_ok,
    new_sender_reference,
    parse_dip_timestamp,
    schema_version_for,
    status_entry,
)

# The pattern of DT-995 as published, kept apart from the module's copy on purpose.
SUR_PATTERN = re.compile(r"^S-((IF|REP)-)?\d{3,4}-[0-9a-fA-F]{10}-[A-Z]{3,5}-\d{8}-[a-zA-Z0-9]+$")
S1_KEYS = {
    "environmentTag",
    "subText",
    "senderUniqueReference",
    "senderTimestamp",
    "senderDIPID",
    "senderRoleID",
    "senderCorrelationID",
    "DIPConnectionProviderID",
}
MOMENT = dt.datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=dt.UTC)


def common(**overrides: object) -> dict:
    options: dict = {
        "interface_id": "IF-021",
        "event": "ActivePower",
        "environment": "UIT",
        "sender_dip_id": "2000000001",
        "sender_role": "SDS",
        "primary_recipients": ["1000000001"],
        "sent_at": MOMENT,
    }
    options.update(overrides)
    return build_common_block(**options)


# ---- timestamps -------------------------------------------------------------------------------


def test_a_dip_timestamp_is_25_characters_in_utc_without_millis() -> None:
    bst = dt.timezone(dt.timedelta(hours=1))

    value = dip_timestamp(dt.datetime(2026, 7, 1, 1, 30, 15, 500_000, tzinfo=bst))

    assert value == "2026-07-01T00:30:15+00:00"
    assert len(value) == 25
    # four digits of year whatever the year (the platform's strftime drops the leading zero)
    assert (
        dip_timestamp(dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == "0999-01-02T03:04:05+00:00"
    )


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="timestamps must be timezone-aware"):
        dip_timestamp(dt.datetime(2026, 7, 1, 0, 0, 0))  # noqa: DTZ001 - the case under test


@pytest.mark.parametrize(
    "value",
    ["2026-07-01T00:30:15Z", "2026-07-01T00:30:15.000+00:00", "2026-07-01 00:30:15+00:00", "x"],
)
def test_parsing_refuses_anything_but_dt003(value: str) -> None:
    with pytest.raises(EnvelopeError, match="is not a 25-character YYYY-MM-DDThh:mm:ss"):
        parse_dip_timestamp(value)


def test_parsing_round_trips() -> None:
    assert parse_dip_timestamp(dip_timestamp(MOMENT)) == MOMENT.replace(microsecond=0)


# ---- sender references ------------------------------------------------------------------------


def test_a_new_sender_reference_matches_the_published_pattern() -> None:
    reference = new_sender_reference(
        interface_id="IF-021", sender_dip_id="2000000001", sender_role="SDS", day=MOMENT.date()
    )

    assert SUR_PATTERN.match(reference)
    assert reference.startswith("S-IF-021-2000000001-SDS-20260329-")


def test_sender_references_are_unique_unless_the_caller_fixes_them() -> None:
    args = {"interface_id": "IF-021", "sender_dip_id": "2000000001", "sender_role": "SDS"}

    assert new_sender_reference(**args) != new_sender_reference(**args)
    fixed = new_sender_reference(**args, day=MOMENT.date(), unique="msg42")
    assert fixed == "S-IF-021-2000000001-SDS-20260329-msg42"


def test_a_report_sender_reference_keeps_to_the_digits_the_pattern_allows() -> None:
    reference = new_sender_reference(
        interface_id="REP-002A", sender_dip_id="5000000001", sender_role="MDS", unique="1"
    )

    assert SUR_PATTERN.match(reference)
    assert reference.startswith("S-REP-002-5000000001-MDS-")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("sender_dip_id", "123456789", "senderDIPID '123456789' is not a 10-character"),
        # not hex, so the pattern cannot hold it
        ("sender_dip_id", "20000000zz", "senderDIPID '20000000zz' is not a 10-character"),
        ("sender_role", "sup", "senderRoleID 'sup' is not a 3-5 letter upper-case"),
        ("sender_role", "SUPPLY", "senderRoleID 'SUPPLY' is not a 3-5 letter upper-case"),
        ("unique", "has-dash", "the unique part 'has-dash' must be letters and digits"),
        ("interface_id", "IF-21", "interface id 'IF-21' is not IF-nnn"),
    ],
)
def test_a_sender_reference_refuses_malformed_parts(field: str, value: str, problem: str) -> None:
    args = {
        "interface_id": "IF-021",
        "sender_dip_id": "2000000001",
        "sender_role": "SDS",
        field: value,
    }

    with pytest.raises(EnvelopeError, match=re.escape(problem)):
        new_sender_reference(**args)


# ---- CommonBlock ------------------------------------------------------------------------------


def test_the_common_block_has_the_sender_blocks_and_leaves_the_dip_blocks_alone() -> None:
    block = common(correlation_id="CI-20260329-1", connection_provider_id="9000000001")

    assert block["S0"] == {
        "interfaceID": "IF-021",
        "schemaVersion": "011",
        "eventCode": "[ActivePower]",
    }
    s1 = block["S1"]
    assert set(s1) == S1_KEYS
    assert s1["environmentTag"] == "UIT"
    assert s1["senderTimestamp"] == "2026-03-29T00:59:59+00:00"
    assert SUR_PATTERN.match(s1["senderUniqueReference"])
    assert "-20260329-" in s1["senderUniqueReference"]
    assert (s1["senderDIPID"], s1["senderRoleID"]) == ("2000000001", "SDS")
    assert s1["senderCorrelationID"] == "CI-20260329-1"
    assert s1["DIPConnectionProviderID"] == "9000000001"
    assert s1["subText"] is None
    assert block["A0"] == {
        "primaryRecipients": ["1000000001"],
        "secondaryRecipients": [],
        "always": [],
    }
    assert "D0" not in block
    assert "M0" not in block


def test_the_common_block_carries_m0_and_a_given_sender_reference() -> None:
    m0 = mpan_block(mpan_core="2000056535971", distributor_dip_id="2000000020", gsp_group_id="_H")

    block = common(m0=m0, sender_reference="S-IF-021-2000000001-SDS-20260329-abc")

    assert block["M0"] == {
        "MPANCore": "2000056535971",
        "distributorDIPID": "2000000020",
        "GSPGroupID": "_H",
    }
    assert block["S1"]["senderUniqueReference"] == "S-IF-021-2000000001-SDS-20260329-abc"


@pytest.mark.parametrize(
    ("interface_id", "version"),
    [("IF-021", "011"), ("if-031", "011"), ("IF-051", "001"), ("REP-002", "008")],
)
def test_schema_versions_follow_v2_1_0(interface_id: str, version: str) -> None:
    assert schema_version_for(interface_id) == version


def test_event_codes_travel_in_brackets() -> None:
    assert event_code("DSApp") == "[DSApp]"
    assert event_code("[DSApp]") == "[DSApp]"
    with pytest.raises(EnvelopeError, match="event code '' is not 1-48 characters"):
        event_code("")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"environment": "PROD"}, "environmentTag 'PROD' is not one of"),
        ({"sender_dip_id": "200000001"}, "senderDIPID '200000001' is not a 10-character"),
        ({"sender_role": "S"}, "senderRoleID 'S' is not a 3-5 letter"),
        ({"primary_recipients": ["not-an-id"]}, "primaryRecipients 'not-an-id' is not a 10-"),
        ({"correlation_id": ""}, "senderCorrelationID must be 1-60 characters"),
        ({"correlation_id": "x" * 61}, "senderCorrelationID must be 1-60 characters"),
        ({"connection_provider_id": "9"}, "DIPConnectionProviderID '9' is not a 10-character"),
        ({"sub_text": "x" * 501}, "subText must be at most 500 characters"),
        (
            {"sender_reference": "S-IF-021-2000000001-SDS-2026-abc"},
            "senderUniqueReference 'S-IF-021-2000000001-SDS-2026-abc' does not match",
        ),
        ({"interface_id": "IF021"}, "interface id 'IF021' is not IF-nnn"),
    ],
)
def test_the_common_block_refuses_malformed_fields(overrides: dict, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=re.escape(problem)):
        common(**overrides)


def test_a_payload_wraps_common_and_custom_blocks() -> None:
    block = common()

    assert build_payload(block, {"B044": {}}) == {"CommonBlock": block, "CustomBlock": {"B044": {}}}
    assert build_payload(block, None) == {"CommonBlock": block}


# ---- MPAN -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mpan", ["2000056535971", "1900012374324"])
def test_published_mpans_pass_their_check_digit(mpan: str) -> None:
    assert mpan_check_digit_ok(mpan)


@pytest.mark.parametrize(
    "mpan", ["2000056535972", "1234567890123", "1315001165123", "200005653597", "20000565359x1", ""]
)
def test_bad_mpans_fail_their_check_digit(mpan: str) -> None:
    assert not mpan_check_digit_ok(mpan)


def test_the_check_digit_is_mod_11_mod_10_of_the_weighted_sum() -> None:
    # The spec's example MPAN 2000056535971 ends in the digit this computes.
    weights = [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43]
    first12 = "200005653597"
    expected = sum(int(d) * w for d, w in zip(first12, weights, strict=True)) % 11 % 10

    assert mpan_check_digit(first12) == expected == 1


def test_an_m0_block_refuses_a_bad_check_digit_unless_told_not_to() -> None:
    with pytest.raises(EnvelopeError, match="MPANCore 2000056535972 fails its check digit"):
        mpan_block(mpan_core="2000056535972", distributor_dip_id="2000000020", gsp_group_id="_H")
    block = mpan_block(
        mpan_core="2000056535972",
        distributor_dip_id="2000000020",
        gsp_group_id="_H",
        check_digit=False,
    )
    assert block["MPANCore"] == "2000056535972"
    with pytest.raises(EnvelopeError, match="GSPGroupID '_I' is not one of"):
        mpan_block(mpan_core="2000056535971", distributor_dip_id="2000000020", gsp_group_id="_I")


# ---- status messages ----------------------------------------------------------------------------


def test_a_status_entry_has_all_ten_keys_and_the_code_in_the_message() -> None:
    entry = status_entry(
        code="RCP1061",
        text="MPAN Invalid or Unknown",
        sender_dip_id="1000000001",
        recipient_dip_id="2000000001",
        transaction_id="T-IF-021-2000000001-SDS-20260329-0011223344556677",
        sent_at=MOMENT,
    )

    assert set(entry) == {
        "transactionID",
        "senderUniqueReference",
        "correlationID",
        "sentTimestamp",
        "senderID",
        "recipientID",
        "DIPConnectionProviderID",
        "message",
        "help",
        "serviceTicketURL",
    }
    assert entry["message"] == "RCP1061 - MPAN Invalid or Unknown"
    assert entry["sentTimestamp"] == "2026-03-29T00:59:59+00:00"
