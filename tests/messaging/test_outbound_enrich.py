"""The final payload Busbar builds from a client's submission (no database, no network)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from messaging.dip.envelope import SENDER_REFERENCE_RE, EnvelopeError
from messaging.outbound.enrich import Sender, final_payload, parse_submission, unique_part

SENDER = Sender(
    interface_id="IF-021", environment="UIT", dip_id="1000000002", role="SDS", dcp_id="10000000DC"
)
CREATED = dt.datetime(2026, 11, 28, 23, 59, 59, tzinfo=dt.UTC)


def submission(**overrides):
    data = {
        "event_code": "ActivePower",
        "custom_block": {"B044": {"issuingDSDIPID": "1000000002"}},
        "primary_recipients": ["1000000001"],
        "mpan": "2000056535971",
        "distributor_dip_id": "2000000020",
        "gsp_group_id": "_H",
        "correlation_id": "CI-20261128-1",
    }
    data.update(overrides)
    parsed, problems = parse_submission(data)
    assert problems == []
    return parsed


def test_busbar_fills_the_envelope_the_client_cannot_know():
    now = dt.datetime(2026, 11, 29, 8, 30, 1, 999_999, tzinfo=dt.UTC)
    body, reference = final_payload(
        submission=submission(),
        sender=SENDER,
        message_id=7_301_234_567_890,
        created_at=CREATED,
        now=now,
    )
    payload = json.loads(body)
    s0, s1 = payload["CommonBlock"]["S0"], payload["CommonBlock"]["S1"]
    assert s0 == {"interfaceID": "IF-021", "schemaVersion": "011", "eventCode": "[ActivePower]"}
    assert s1 == {
        "environmentTag": "UIT",
        "subText": None,
        "senderUniqueReference": reference,
        "senderTimestamp": "2026-11-29T08:30:01+00:00",
        "senderDIPID": "1000000002",
        "senderRoleID": "SDS",
        "senderCorrelationID": "CI-20261128-1",
        "DIPConnectionProviderID": "10000000DC",
    }
    assert len(s1["senderTimestamp"]) == 25
    assert SENDER_REFERENCE_RE.match(reference)
    # The reference is the message's: its creation day and its id, the same on every attempt.
    assert reference == f"S-IF-021-1000000002-SDS-20261128-{unique_part(7_301_234_567_890)}"
    _body, same = final_payload(
        submission=submission(),
        sender=SENDER,
        message_id=7_301_234_567_890,
        created_at=CREATED,
        now=now + dt.timedelta(hours=3),
    )
    assert same == reference
    assert payload["CommonBlock"]["M0"]["MPANCore"] == "2000056535971"
    assert payload["CustomBlock"] == {"B044": {"issuingDSDIPID": "1000000002"}}
    assert payload["CommonBlock"]["A0"]["primaryRecipients"] == ["1000000001"]


def test_without_a_dcp_the_provider_id_is_null():
    sender = Sender(
        interface_id="IF-021", environment="PRD", dip_id="1000000002", role="SDS", dcp_id=None
    )
    body, _ = final_payload(
        submission=submission(), sender=sender, message_id=1, created_at=CREATED, now=CREATED
    )
    s1 = json.loads(body)["CommonBlock"]["S1"]
    assert (s1["DIPConnectionProviderID"], s1["environmentTag"]) == (None, "PRD")


def test_unique_parts_are_letters_and_digits_and_distinct():
    parts = {unique_part(n) for n in (0, 1, 35, 36, 2**63 - 1)}
    assert len(parts) == 5
    assert all(p.isalnum() for p in parts)


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"event_code": ""}, "$.event_code"),
        ({"event_code": "[" + "x" * 60 + "]"}, "$.event_code"),
        ({"custom_block": []}, "$.custom_block"),
        ({"primary_recipients": ["123"]}, "$.primary_recipients[0]"),
        ({"mpan": "2000056535972"}, "$.mpan"),
        ({"gsp_group_id": "_I"}, "$.gsp_group_id"),
        ({"correlation_id": "x" * 61}, "$.correlation_id"),
        ({"business_key": "has space"}, "$.business_key"),
        ({"supersede": "yes"}, "$.supersede"),
        ({"sub_text": "a\x00b"}, "$.sub_text"),
    ],
)
def test_each_bad_fact_is_named_by_its_path(overrides, path):
    data = {
        "event_code": "ActivePower",
        "custom_block": {},
        "mpan": "2000056535971",
        "distributor_dip_id": "2000000020",
        "gsp_group_id": "_H",
        **overrides,
    }
    parsed, problems = parse_submission(data)
    assert parsed is None
    assert [p.path for p in problems] == [path]


def test_an_envelope_that_cannot_be_built_is_an_error_naming_the_field():
    sender = Sender(
        interface_id="IF-021", environment="XYZ", dip_id="1000000002", role="SDS", dcp_id=None
    )
    with pytest.raises(EnvelopeError, match="environmentTag"):
        final_payload(
            submission=submission(), sender=sender, message_id=1, created_at=CREATED, now=CREATED
        )
