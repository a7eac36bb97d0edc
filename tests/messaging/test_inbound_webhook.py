"""The webhook against real PostgreSQL with real signatures: refusals (unknown channel, bad or
untrusted signatures, skew, malformed and oversized bodies) get the answer the DIP expects and
leave a security event holding the request's hash and headers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from unittest import mock

import pytest
from django.db import OperationalError

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.dip.signing import HEADER_SIGNATURE
from messaging.inbound import receive
from messaging.models import Message, RawBlob
from messaging.store.services import message_bytes, raw_body
from tests.messaging.inbound_helpers import (
    BASE_URL,
    DipSigner,
    body_of,
    inbound_channel,
    pushed_if021,
    trust,
)


@pytest.fixture
def endpoint(world, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    signer = DipSigner()
    trust(world.acme.id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
    yield channel, signer, url
    receive.forget_endpoints()


def _events(tenant_id, action):
    with tenant_context(tenant_id):
        return list(AuditEvent.objects.filter(action=action))


def test_an_unknown_token_is_404_and_a_security_event_without_a_tenant(endpoint):
    _channel, signer, _url = endpoint
    body = body_of(pushed_if021())
    url = f"{BASE_URL}/dip/webhooks/not-a-token"
    # The row is written without a tenant (only provider support reads those), so the runtime
    # role cannot read it back: the spy sees what was written, the database still writes it.
    with mock.patch.object(receive, "record_event", wraps=receive.record_event) as spy:
        answer = receive.receive_push(
            token="not-a-token", url=url, headers=signer.headers(url, body), body=body
        )
    assert answer.status == 404
    [call] = spy.call_args_list
    assert call.kwargs["action"] == "webhook.unknown_channel"
    assert call.kwargs["category"] == "security"
    assert call.kwargs["detail"]["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "X-DIP-Signature" in call.kwargs["detail"]["headers"]


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        ("signature", "bad_signature"),
        ("body", "hash_mismatch"),
        ("url", "bad_signature"),
        ("untrusted", "untrusted_certificate"),
        ("old", "date_skew"),
        ("missing", "missing_header"),
    ],
)
def test_a_bad_signature_is_refused_with_rcp9999_and_evidenced(endpoint, world, tamper, check):
    channel, signer, url = endpoint
    message = pushed_if021()
    body = body_of(message)
    headers = signer.headers(url, body)
    if tamper == "signature":
        headers[HEADER_SIGNATURE] = ("A" if headers[HEADER_SIGNATURE][0] != "A" else "B") + headers[
            HEADER_SIGNATURE
        ][1:]
    elif tamper == "body":
        body = body.replace(b'"AI"', b'"AE"')
    elif tamper == "url":
        headers = signer.headers(url + "x", body)
    elif tamper == "untrusted":
        headers = DipSigner().headers(url, body)
    elif tamper == "old":
        headers = signer.headers(url, body, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    elif tamper == "missing":
        del headers[HEADER_SIGNATURE]
    answer = receive.receive_push(
        token=channel.webhook_token, url=url, headers=headers, body=body, source_address="10.0.0.9"
    )
    assert answer.status == 400
    entries = json.loads(answer.body)["messageArray"]
    assert [e["message"] for e in entries] == ["RCP9999 - Message Signature Invalid"]
    assert entries[0]["transactionID"] == message["payload"]["CommonBlock"]["D0"]["transactionID"]
    assert entries[0]["senderID"] == "1000000001"
    [event] = _events(world.acme.id, "webhook.bad_signature")
    assert event.category == "security"
    assert event.detail["check"] == check
    assert event.detail["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert event.source_address == "10.0.0.9"


def test_the_skew_is_configurable(endpoint, settings):
    channel, signer, url = endpoint
    body = body_of(pushed_if021())
    headers = signer.headers(url, body, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90))
    settings.BUSBAR_WEBHOOK_SKEW_SECONDS = 60
    refused = receive.receive_push(token=channel.webhook_token, url=url, headers=headers, body=body)
    assert refused.status == 400


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'[{"payload": ', 400, "RCP1001"),
        (b"{}", 400, "RCP1001"),
        (b'[{"payload": {"CommonBlock": {"S0": {}}}}]', 400, "RCP1043"),
    ],
)
def test_a_malformed_body_signed_correctly_is_refused_and_evidenced(
    endpoint, world, body, status, code
):
    channel, signer, url = endpoint
    answer = receive.receive_push(
        token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
    )
    assert answer.status == status
    assert json.loads(answer.body)["messageArray"][0]["message"].startswith(code)
    [event] = _events(world.acme.id, "webhook.malformed")
    assert event.detail["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_an_oversized_body_is_evidenced_by_its_headers(endpoint, world):
    channel, _signer, _url = endpoint
    answer = receive.refuse_oversized(
        "push", channel.webhook_token, {"Content-Length": "99999999"}, 1000, None
    )
    assert answer.status == 413
    [event] = _events(world.acme.id, "webhook.oversized")
    assert event.detail["headers"]["Content-Length"] == "99999999"


def _entries(answer) -> list[tuple[str, str]]:
    return [(e["transactionID"], e["message"]) for e in json.loads(answer.body)["messageArray"]]


def _push(endpoint, *messages, body=None):
    channel, signer, url = endpoint
    body = body or body_of(*messages)
    return receive.receive_push(
        token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
    )


def test_a_signed_push_is_stored_exactly_and_acknowledged_per_message(endpoint, world):
    first, second = pushed_if021(), pushed_if021(mpan="1900012374324")
    body = body_of(first, second)
    answer = _push(endpoint, body=body)
    assert answer.status == 201
    ids = [m["payload"]["CommonBlock"]["D0"]["transactionID"] for m in (first, second)]
    assert _entries(answer) == [
        (ids[0], "RCP0000 - Message Success"),
        (ids[1], "RCP0000 - Message Success"),
    ]
    with tenant_context(world.acme.id):
        raw = RawBlob.objects.get(id=answer.delivery_id)
        messages = list(Message.objects.order_by("id"))
        assert raw_body(tenant_id=world.acme.id, raw_id=raw.id) == body
        assert [message_bytes(m) for m in messages] == [
            json.dumps(first, separators=(",", ":")).encode(),
            json.dumps(second, separators=(",", ":")).encode(),
        ]
    assert raw.headers["signer_sha256"]
    assert raw.response_status == 201
    assert [m.transaction_id for m in messages] == ids
    assert [m.state for m in messages] == ["received", "received"]
    assert messages[1].mpan == "1900012374324"
    assert len(raw.body_zstd) < len(body) / 3  # stored compressed


def test_the_same_push_twice_gets_the_same_answer_and_no_second_message(endpoint, world):
    message = pushed_if021()
    first = _push(endpoint, message)
    again = _push(endpoint, message)
    assert again.status == first.status == 201
    assert _entries(again) == _entries(first)
    later = _push(endpoint, message, pushed_if021())  # one old, one new
    assert later.status == 201
    assert len(_entries(later)) == 2
    with tenant_context(world.acme.id):
        assert Message.objects.count() == 2
        assert (
            RawBlob.objects.count() == 3
        )  # every delivery is evidence, its messages are not doubled


def test_a_failure_to_store_answers_503_so_the_dip_retries(endpoint, world):
    with mock.patch.object(receive, "store_inbound_delivery", side_effect=OperationalError("down")):
        answer = _push(endpoint, pushed_if021())
    assert answer.status == 503
    assert dict(answer.headers)["Retry-After"]
    with tenant_context(world.acme.id):
        assert not Message.objects.exists()
