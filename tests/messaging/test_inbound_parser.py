"""The webhook's parser of DIP pushes: exact byte ranges per message, named refusals, and a
property-based fuzz (whatever arrives, the answer is a DeliveryError or a parse, never a crash)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.dip import webhook
from messaging.dip.webhook import (
    DeliveryError,
    _facts_view,
    _split_exact,
    _split_fast,
    accepted_response,
    parse_push,
    refusal_response,
)
from tests.messaging.inbound_helpers import body_of, pushed_if021


def test_each_message_is_an_exact_slice_of_the_body():
    first, second = pushed_if021(), pushed_if021(mpan="1900012374324")
    second["payload"]["CommonBlock"]["S1"]["subText"] = "caf\u00e9 \u2013 non-ASCII bytes"
    body = (
        b" [ "
        + json.dumps(first).encode()
        + b" ,\n"
        + json.dumps(second, ensure_ascii=False).encode()
        + b"]\n"
    )
    messages = parse_push(body)
    assert [m.transaction_id for m in messages] == [
        first["payload"]["CommonBlock"]["D0"]["transactionID"],
        second["payload"]["CommonBlock"]["D0"]["transactionID"],
    ]
    for message, original in zip(messages, (first, second), strict=True):
        assert json.loads(body[message.offset : message.offset + message.length]) == original
    assert messages[1].mpan == "1900012374324"
    assert messages[0].interface_id == "IF-021"
    assert messages[0].event_code == "[ActivePower]"
    assert messages[0].correlation_id
    assert messages[0].sender_unique_reference


def test_keys_are_read_whatever_their_case():
    message = pushed_if021()
    message["payload"]["CommonBlock"]["d0"] = message["payload"]["CommonBlock"].pop("D0")
    [parsed] = parse_push(body_of(message))
    assert parsed.transaction_id == message["payload"]["CommonBlock"]["d0"]["transactionID"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not a JSON array"),
        (b"{}", "not a JSON array"),
        (b"[]", "holds no message"),
        (b"[1,]", "malformed JSON"),
        (b'[{"payload": {}}] x', "data after the JSON array"),
        (b'[{"payload": ', "malformed JSON"),
        (b"\xff[]", "not UTF-8"),
        (b'[{"payload": 1}]', "not an object with a payload"),
        (b'[{"payload": {"CommonBlock": {}}}]', "no usable D0.transactionID"),
    ],
)
def test_a_body_that_cannot_be_accepted_is_refused_with_the_reason(body, reason):
    with pytest.raises(DeliveryError, match=reason) as caught:
        parse_push(body)
    assert caught.value.status == 400


def test_a_transaction_id_repeated_in_one_batch_refuses_the_batch():
    message = pushed_if021()
    with pytest.raises(DeliveryError, match="repeated") as caught:
        parse_push(body_of(message, message))
    assert caught.value.code[0] == "RCP1043"


def test_too_many_messages_is_413():
    with pytest.raises(DeliveryError) as caught:
        parse_push(body_of(pushed_if021(), pushed_if021()), max_messages=1)
    assert caught.value.status == 413


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_never_crash_the_parser(body):
    status = 201
    try:
        parse_push(body)
    except DeliveryError as err:
        status = err.status
    assert status in (201, 400, 413)
    refusal_response(
        code=("RCP1001", "Schema Failure"), reason="x", responder_dip_id=None, body=body
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, max_size=5), st.sampled_from(["", " ", "\n"]))
def test_fuzz_json_shaped_bodies_never_crash_the_parser(items, pad):
    body = (pad + json.dumps(items) + pad).encode()
    try:
        messages = parse_push(body)
    except DeliveryError as err:
        messages, status = [], err.status
    else:
        status = 201
    assert status in (201, 400, 413)
    for m in messages:
        assert json.loads(body[m.offset : m.offset + m.length])["payload"] is not None


# Elements shaped like pushed messages, whose strings may hold the very characters the quick
# split cuts at ('},{"payload":'), with JSON whitespace of any kind between the tokens.
TRICKY_TEXT = st.sampled_from(['},{"payload":', '} , {"payload" :', "]", "\u00e9\u2013", ""])
ELEMENT = st.builds(
    lambda inner, text: {"payload": {"CommonBlock": inner, "note": text}},
    JSON,
    st.text(max_size=6) | TRICKY_TEXT,
)
WHITESPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n ", "  "])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(ELEMENT, JSON), min_size=1, max_size=6),
    st.lists(WHITESPACE, min_size=14, max_size=14),
    st.booleans(),
)
def test_fuzz_the_quick_split_agrees_with_the_exact_parser(items, pads, ascii_only):
    """Where the quick split (simdjson per cut piece) vouches for a body, its byte ranges are
    exactly the standard parser's and it reads the same of each element; otherwise it declines
    and the exact way decides. Either way parse_push gives the same answer."""
    parts = [json.dumps(item, ensure_ascii=ascii_only) for item in items]
    body = pads[0] + "[" + pads[1]
    for i, part in enumerate(parts):
        body += (pads[(2 + i) % 14] + "," + pads[(3 + i) % 14] if i else "") + part
    body = (body + pads[12] + "]" + pads[13]).encode()
    quick = _split_fast(body)
    exact = _split_exact(body.decode())
    assert [value for value, _offset, _size in exact] == items
    if quick is not None:
        assert quick == [(_facts_view(value), offset, size) for value, offset, size in exact]
        for (value, offset, size), item in zip(exact, items, strict=True):
            assert json.loads(body[offset : offset + size]) == value == item
    assert _parsed(body) == _parsed(body, exact_only=True)


def _parsed(body: bytes, *, exact_only: bool = False) -> object:
    """parse_push's messages, or its refusal, optionally with the quick split turned off."""
    quick = webhook._split_fast
    if exact_only:
        webhook._split_fast = lambda _body: None
    try:
        return parse_push(body)
    except DeliveryError as err:
        return (err.status, err.code, err.reason)
    finally:
        webhook._split_fast = quick


@pytest.mark.parametrize(
    "body",
    [
        # json keeps the last of repeated keys; simdjson's own look-up finds the first.
        b'[{"payload": {"CommonBlock": {"D0": {"transactionID": "A", "transactionID": "B"}}}}]',
        b'[{"payload": {"CommonBlock": {"D0": {"transactionID": "A"}}}, '
        b'"payload": {"CommonBlock": {"D0": {"transactionID": "B"}}}}]',
        b'[{"payload": {"CommonBlock": 1, "CommonBlock": {"D0": {"transactionID": "B"}}}}]',
        b'[{"Payload": {"commonblock": {"d0": {"transactionID": "A"}}}, '
        b'"payload": {"CommonBlock": {"D0": {"transactionID": "B"}}}}]',
    ],
)
def test_repeated_and_differently_cased_keys_read_as_the_standard_parser_reads_them(body):
    [message] = parse_push(body)
    assert message.transaction_id == "B"
    assert _parsed(body) == _parsed(body, exact_only=True)


def test_a_string_holding_the_separator_is_not_a_cut():
    message = pushed_if021()
    message["payload"]["CommonBlock"]["S1"]["subText"] = '},{"payload": {}}'
    body = body_of(message, pushed_if021(mpan="1900012374324"))
    [first, second] = parse_push(body)
    assert json.loads(body[first.offset : first.offset + first.length]) == message
    assert second.mpan == "1900012374324"


@pytest.mark.parametrize(
    ("value", "written", "quick"),
    [
        # simdjson refuses these where json reads them: the exact parser decides.
        (2**70, b"1180591620717411303424", False),
        (float("inf"), b"1e400", False),
        (float("nan"), b"NaN", False),
        ("\ud800", b'"\\ud800"', False),
        (2**63 - 1, b"9223372036854775807", True),
    ],
)
def test_what_simdjson_reads_otherwise_than_json_is_accepted_as_before(value, written, quick):
    """No sender's message is read differently for the change of parser: the facts kept are the
    same, and the message is kept as its exact bytes, the value as the sender wrote it."""
    message = pushed_if021()
    message["payload"]["CommonBlock"]["S1"]["extra"] = "PLACEHOLDER"
    body = body_of(message).replace(b'"PLACEHOLDER"', written)
    assert (_split_fast(body) is not None) is quick
    [parsed] = parse_push(body)
    assert parsed.transaction_id == message["payload"]["CommonBlock"]["D0"]["transactionID"]
    kept = body[parsed.offset : parsed.offset + parsed.length]
    assert written in kept
    extra = json.loads(kept)["payload"]["CommonBlock"]["S1"]["extra"]
    assert extra == value or (value != value and extra != extra)  # NaN is not equal to itself


def test_the_answer_repeats_what_the_standard_parser_read_even_a_lone_surrogate():
    """The 201 answer is written by orjson, which cannot write a lone surrogate; the standard
    parser lets one into a sender reference, so such an answer is written by the standard
    encoder, with the same entries."""
    message = pushed_if021()
    message["payload"]["CommonBlock"]["S1"]["senderUniqueReference"] = "PLACEHOLDER"
    body = body_of(message).replace(b'"PLACEHOLDER"', b'"S-\\ud800"')
    [parsed] = parse_push(body)
    assert parsed.sender_unique_reference == "S-\ud800"
    [entry] = json.loads(accepted_response([parsed], responder_dip_id="1000000001"))["messageArray"]
    assert entry["senderUniqueReference"] == "S-\ud800"
    assert entry["transactionID"] == parsed.transaction_id
    assert entry["message"] == "RCP0000 - Message Success"
