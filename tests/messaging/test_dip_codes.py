"""MSG/RCP codes and HTTP statuses: what Busbar does about each, and the mapping of a
StandardResponse onto the messages of a batch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from messaging.dip.client import message_outcomes
from messaging.dip.codes import (
    MSG_CODES,
    RCP_CODES,
    Action,
    classify_status,
    message_action,
    parse_code,
    parse_retry_after,
)
from tests.messaging.conftest import reference_dir
from tests.spec import spec_missing


def _spec_codes() -> list[str]:
    spec = reference_dir()
    if spec is None:
        return []
    data = yaml.safe_load((Path(spec) / "ResponseCodes-unresolved.yaml").read_text())
    # The file's one enumeration of codes (found by shape, so no name of the spec is repeated here).
    enums = [s["enum"] for s in data["components"]["schemas"].values() if "enum" in s]
    return max(enums, key=len)


def test_every_msg_and_rcp_code_of_the_spec_has_an_action() -> None:
    if reference_dir() is None:
        spec_missing("every MSG and RCP code of the spec has an action")
    published = {c for c in _spec_codes() if c.startswith(("MSG", "RCP"))}

    assert published == set(MSG_CODES) | set(RCP_CODES)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("MSG1001 - Schema Failure", "MSG1001"),
        ("MSG1001 -Schema Failure", "MSG1001"),  # as in the spec's own 400 example
        ("RCP9999 - Message Signature Invalid", "RCP9999"),
        ("REG0000 - MPAN Invalid", None),
        ("Schema Failure", None),
        (None, None),
    ],
)
def test_codes_are_read_from_the_message_text(text: str | None, code: str | None) -> None:
    assert parse_code(text) == code


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("MSG0000", Action.ACCEPTED),
        ("MSG1000", Action.RETRY),
        ("MSG1001", Action.REJECT),
        ("MSG1006", Action.RECONCILE),
        ("MSG1009", Action.REJECT),
        ("MSG1038", Action.REJECT),
        ("MSG9876", Action.REJECT),  # unknown: a person looks, no retry loop
        (None, Action.REJECT),
    ],
)
def test_each_msg_code_decides_the_fate_of_its_message(code: str | None, action: Action) -> None:
    assert message_action(code) is action


@pytest.mark.parametrize(
    ("status", "action", "retryable"),
    [
        (200, Action.ACCEPTED, False),
        (201, Action.ACCEPTED, False),
        (204, Action.ACCEPTED, False),
        (400, Action.REJECT, False),
        (401, Action.HALT, False),
        (403, Action.HALT, False),
        (404, Action.HALT, False),
        (405, Action.HALT, False),
        (406, Action.HALT, False),
        (413, Action.HALT, False),
        (505, Action.HALT, False),
        (408, Action.RETRY, True),
        (429, Action.RETRY, True),
        (500, Action.RETRY, True),
        (502, Action.RETRY, True),
        (503, Action.RETRY, True),
        (504, Action.RETRY, True),
        (507, Action.RETRY, True),
        (418, Action.HALT, False),
    ],
)
def test_http_statuses_are_classified(status: int, action: Action, retryable: bool) -> None:
    klass = classify_status(status)

    assert (klass.action, klass.retryable) == (action, retryable)


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 3, 29, 12, 0, 0, tzinfo=dt.UTC)

    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Sun, 29 Mar 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 29 Mar 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# ---- a StandardResponse onto a batch -----------------------------------------------------------

REFS = ["S-IF-021-2000000001-SDS-20260329-a", "S-IF-021-2000000001-SDS-20260329-b", None]


def entry(message: str | None, sur: str | None = None, txn: str | None = None) -> dict:
    return {
        "transactionID": txn,
        "senderUniqueReference": sur,
        "correlationID": None,
        "sentTimestamp": "2026-03-29T12:00:00+00:00",
        "senderID": "0000000000",
        "recipientID": "2000000001",
        "DIPConnectionProviderID": None,
        "message": message,
        "help": None,
        "serviceTicketURL": None,
    }


def test_a_201_gives_each_message_its_transaction_id_by_reference_then_by_order() -> None:
    body = {
        "messageArray": [
            entry("MSG0000 - Success", REFS[1], "T-b"),
            entry("MSG0000 - Success", REFS[0], "T-a"),
            entry("MSG0000 - Success", None, "T-c"),
        ]
    }

    outcomes, isolate = message_outcomes(201, body, REFS)

    assert [o.transaction_id for o in outcomes] == ["T-a", "T-b", "T-c"]
    assert {o.action for o in outcomes} == {Action.ACCEPTED}
    assert not isolate


def test_a_201_without_an_entry_for_a_message_asks_for_reconciliation() -> None:
    body = {"messageArray": [entry("MSG0000 - Success", REFS[0], "T-a")]}

    outcomes, _ = message_outcomes(201, body, REFS[:2])

    assert [o.action for o in outcomes] == [Action.ACCEPTED, Action.RECONCILE]


def test_a_400_rejects_the_named_message_and_resends_the_others() -> None:
    body = {"messageArray": [entry("MSG1001 - Schema Failure", REFS[1])]}

    outcomes, isolate = message_outcomes(400, body, REFS)

    assert [o.action for o in outcomes] == [Action.RESEND, Action.REJECT, Action.RESEND]
    assert outcomes[1].code == "MSG1001"
    assert outcomes[1].transaction_id is None
    assert not isolate


def test_a_400_that_names_no_message_of_a_batch_asks_to_isolate_them() -> None:
    body = {"messageArray": [entry("MSG1001 -Schema Failure", None)]}

    outcomes, isolate = message_outcomes(400, body, REFS)

    assert isolate
    assert {o.action for o in outcomes} == {Action.RESEND}


def test_a_400_about_a_single_message_batch_is_about_that_message() -> None:
    body = {"messageArray": [entry("MSG1030 - Msg Addressing / Routing Error", None)]}

    outcomes, isolate = message_outcomes(400, body, REFS[:1])

    assert [(o.action, o.code) for o in outcomes] == [(Action.REJECT, "MSG1030")]
    assert not isolate


def test_a_400_without_a_standard_response_isolates_a_batch_or_rejects_a_lone_message() -> None:
    batch, isolate = message_outcomes(400, None, REFS)
    [lone], lone_isolate = message_outcomes(400, "not json", REFS[:1])

    assert isolate
    assert {o.action for o in batch} == {Action.RESEND}
    assert (lone.action, lone.code, lone_isolate) == (Action.REJECT, None, False)


def test_a_201_entry_without_a_transaction_id_asks_for_reconciliation() -> None:
    body = {"messageArray": [entry("MSG0000 - Success", REFS[0]), entry(None, REFS[1], "T-b")]}

    outcomes, _ = message_outcomes(201, body, REFS[:2])

    assert [(o.action, o.transaction_id) for o in outcomes] == [
        (Action.RECONCILE, None),
        (Action.ACCEPTED, "T-b"),
    ]
