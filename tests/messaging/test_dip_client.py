"""DipClient against a real dipsim process over real mutual TLS on 127.0.0.1: accepted batches,
all-or-nothing rejection with per-message codes, credential failures, injected DIP faults, the
"did it arrive?" case, an untrusted server, webhook configuration, replay, requeue and status.

dipsim validates with the official v2.1.0 schemas when they are available (see conftest)."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from messaging.dip import (
    Action,
    DipClient,
    DipTransportError,
    build_common_block,
    build_payload,
    dip_timestamp,
    mpan_block,
    status_entry,
)
from tests.messaging.conftest import (
    SDS_API_KEY,
    SDS_DIP_ID,
    SUP_API_KEY,
    SUP_DIP_ID,
    Credentials,
    Dipsim,
)
from tests.spec import spec_missing


def if021(*, mqid: str = "AI", recipients: tuple[str, ...] = (SUP_DIP_ID,)) -> dict[str, Any]:
    """An IF-021 [ActivePower] payload from the SDS: yesterday's 48 UTC half hours."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    start = dt.datetime.combine(now.date() - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    common = build_common_block(
        interface_id="IF-021",
        event="ActivePower",
        environment="UIT",
        sender_dip_id=SDS_DIP_ID,
        sender_role="SDS",
        primary_recipients=recipients,
        sent_at=now,
        m0=mpan_block(
            mpan_core="2000056535971", distributor_dip_id="2000000020", gsp_group_id="_H"
        ),
    )
    periods = [
        {
            "sp": dip_timestamp(start + dt.timedelta(minutes=30 * (i + 1))),
            "v": f"{0.125 + i / 1000:.3f}",
            "q": "A",
            "e": None,
            "arc": None,
        }
        for i in range(48)
    ]
    custom = {
        "B044": {"issuingDataServiceDIPID": SDS_DIP_ID},
        "B067": {
            "connectionTypeIndicator": "W",
            "connectionTypeEffectiveFromDate": "2020-01-01T00:00:00+00:00",
        },
        "B900": {
            "MQID": {"measurementQuantityID": mqid},
            "settlementDayConsumptionPeriods": [
                {
                    "settlementDay": {
                        "settlementDayDate": dip_timestamp(start),
                        "periodDuration": 30,
                    },
                    "consumptionPeriods": periods,
                }
            ],
        },
    }
    return build_payload(common, custom)


def make_client(
    dipsim: Dipsim,
    credentials: Credentials,
    api_key: str,
    *,
    ca: bytes | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
) -> DipClient:
    return DipClient(
        base_url=base_url or dipsim.base_url,
        api_key=api_key,
        mtls_certificate_pem=credentials.mtls_cert.read_bytes(),
        mtls_private_key_pem=credentials.mtls_key.read_bytes(),
        signing_certificate_pem=credentials.sign_cert.read_bytes(),
        signing_private_key_pem=credentials.sign_key.read_bytes(),
        server_ca_pem=ca or dipsim.ca_cert.read_bytes(),
        timeout=timeout,
        connect_timeout=5.0,
    )


@pytest.fixture(scope="module")
def sds(dipsim: Dipsim) -> Iterator[DipClient]:
    with make_client(dipsim, dipsim.sds, SDS_API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def sup(dipsim: Dipsim) -> Iterator[DipClient]:
    with make_client(dipsim, dipsim.sup, SUP_API_KEY) as client:
        yield client


@pytest.fixture(autouse=True)
def _no_faults_left(dipsim: Dipsim) -> Iterator[None]:
    yield
    httpx.delete(f"{dipsim.admin_url}/admin/faults").raise_for_status()


def add_fault(dipsim: Dipsim, kind: str, **rule: Any) -> None:
    body = {"kind": kind, "direction": "ingress", "dip_id": SDS_DIP_ID, **rule}
    httpx.post(f"{dipsim.admin_url}/admin/faults", json=body).raise_for_status()


def fingerprint(path: Any) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


# ---- sending ----------------------------------------------------------------------------------


def test_a_valid_if021_batch_is_accepted_with_transaction_ids(
    dipsim: Dipsim, sds: DipClient
) -> None:
    messages = [if021() for _ in range(3)]

    result = sds.submit("IF-021", messages)

    assert result.status == 201, result.response_body
    assert result.accepted
    assert [o.action for o in result.outcomes] == [Action.ACCEPTED] * 3
    transactions = [o.transaction_id for o in result.outcomes]
    assert all(t and t.startswith(f"T-IF-021-{SDS_DIP_ID}-SDS-") for t in transactions)
    assert len(set(transactions)) == 3
    assert [o.sender_reference for o in result.outcomes] == [
        m["CommonBlock"]["S1"]["senderUniqueReference"] for m in messages
    ]
    # What was sent, exactly, and with which certificates.
    assert json.loads(result.body) == [{"payload": m} for m in messages]
    assert result.body_sha256 == hashlib.sha256(result.body).hexdigest()
    assert result.signing_certificate_fingerprint == fingerprint(dipsim.sds.sign_cert)
    assert result.mtls_certificate_fingerprint == fingerprint(dipsim.sds.mtls_cert)
    # The DIP holds them under those ids.
    stored = httpx.get(f"{dipsim.admin_url}/admin/messages/{transactions[0]}").json()
    assert stored["senderUniqueReference"] == result.outcomes[0].sender_reference
    assert stored["sender"] == SDS_DIP_ID


def test_the_official_schemas_judged_the_batch(dipsim: Dipsim) -> None:
    if not dipsim.official_schemas:
        spec_missing("dipsim judges the batch with the official schemas")
    health = httpx.get(f"{dipsim.admin_url}/admin/health").json()

    assert "official" in health["schemas"]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (lambda: if021(mqid="XX"), "MSG1001"),  # fails the schema
        (lambda: if021(recipients=("1999999990",)), "MSG1031"),  # nobody of that id
    ],
    ids=["schema", "unknown-recipient"],
)
def test_one_bad_message_gets_the_batch_refused_and_the_good_ones_go_alone(
    sds: DipClient, bad: Any, code: str
) -> None:
    batch = [if021(), bad(), if021()]

    result = sds.submit("IF-021", batch)

    assert result.status == 400, result.response_body
    assert not result.retryable
    assert [o.action for o in result.outcomes] == [Action.RESEND, Action.REJECT, Action.RESEND]
    assert result.outcomes[1].code == code
    assert all(o.transaction_id is None for o in result.outcomes)

    resent = sds.submit("IF-021", [batch[i] for i in result.indexes(Action.RESEND)])

    assert resent.status == 201, resent.response_body
    assert [o.action for o in resent.outcomes] == [Action.ACCEPTED, Action.ACCEPTED]


def test_messages_can_go_as_the_exact_bytes_stored_for_them(sds: DipClient) -> None:
    raw = json.dumps(if021(), separators=(",", ":")).encode()

    result = sds.submit("IF-021", [raw])

    assert result.status == 201, result.response_body
    assert result.body == b'[{"payload":' + raw + b"}]"


# ---- credentials ------------------------------------------------------------------------------


def test_a_wrong_api_key_is_a_permanent_refusal(dipsim: Dipsim) -> None:
    with make_client(dipsim, dipsim.sds, "not-the-key") as client:
        result = client.submit("IF-021", [if021()])

    assert result.status == 401
    assert (result.action, result.retryable) == (Action.HALT, False)
    assert [o.action for o in result.outcomes] == [Action.HALT]


def test_certificates_of_another_participant_are_a_permanent_refusal(dipsim: Dipsim) -> None:
    with make_client(dipsim, dipsim.sup, SDS_API_KEY) as client:
        result = client.submit("IF-021", [if021()])

    assert result.status == 403
    assert (result.action, result.retryable) == (Action.HALT, False)


def test_it_refuses_a_server_whose_certificate_is_not_from_the_configured_ca(
    dipsim: Dipsim,
) -> None:
    other_ca = dipsim.other_ca_cert.read_bytes()
    client = make_client(dipsim, dipsim.sds, SDS_API_KEY, ca=other_ca)
    with client, pytest.raises(DipTransportError) as caught:
        client.submit("IF-021", [if021()])

    assert caught.value.kind == "tls_untrusted_server"
    assert not caught.value.retryable
    assert not caught.value.maybe_delivered


# ---- DIP faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "status"),
    [
        ("error", {"status": 500}, 500),
        ("error", {"status": 502}, 502),
        ("error", {"status": 503}, 503),
        ("error", {"status": 504}, 504),
        ("rate_limit", {}, 429),
    ],
)
def test_dip_server_errors_are_retryable(
    dipsim: Dipsim, sds: DipClient, kind: str, params: dict, status: int
) -> None:
    add_fault(dipsim, kind, params=params, remaining=1)

    result = sds.submit("IF-021", [if021()])

    assert result.status == status
    assert (result.action, result.retryable) == (Action.RETRY, True)
    assert [o.action for o in result.outcomes] == [Action.RETRY]
    assert sds.submit("IF-021", [if021()]).status == 201  # it passes


def test_an_outage_is_retryable(dipsim: Dipsim, sds: DipClient) -> None:
    add_fault(dipsim, "outage", duration=30)

    result = sds.submit("IF-021", [if021()])

    assert (result.status, result.retryable) == (503, True)


def test_a_payload_too_large_is_permanent(dipsim: Dipsim, sds: DipClient) -> None:
    add_fault(dipsim, "too_large", remaining=1)

    result = sds.submit("IF-021", [if021()])

    assert (result.status, result.action, result.retryable) == (413, Action.HALT, False)


def test_a_request_the_dip_holds_too_long_times_out_as_retryable(dipsim: Dipsim) -> None:
    add_fault(dipsim, "timeout", params={"seconds": 3}, remaining=1)

    client = make_client(dipsim, dipsim.sds, SDS_API_KEY, timeout=0.5)
    with client, pytest.raises(DipTransportError) as caught:
        client.submit("IF-021", [if021()])

    assert caught.value.kind == "timeout"
    assert caught.value.retryable
    assert caught.value.maybe_delivered


def test_a_dropped_answer_is_retryable_and_the_resend_asks_for_reconciliation(
    dipsim: Dipsim, sds: DipClient
) -> None:
    messages = [if021(), if021()]
    add_fault(dipsim, "drop_after_accept", remaining=1)

    with pytest.raises(DipTransportError) as caught:
        sds.submit("IF-021", messages)

    assert caught.value.kind == "connection_dropped"
    assert (caught.value.retryable, caught.value.maybe_delivered) == (True, True)
    sent = json.dumps([{"payload": m} for m in messages], separators=(",", ":")).encode()
    assert caught.value.body_sha256 == hashlib.sha256(sent).hexdigest()

    again = sds.submit("IF-021", messages)

    assert again.status == 400
    assert [(o.action, o.code) for o in again.outcomes] == [(Action.RECONCILE, "MSG1006")] * 2


def test_a_refused_connection_is_retryable_and_not_delivered(dipsim: Dipsim) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the client connects
    c = make_client(dipsim, dipsim.sds, SDS_API_KEY, base_url=f"https://127.0.0.1:{port}")
    with c, pytest.raises(DipTransportError) as caught:
        c.submit("IF-021", [if021()])

    assert caught.value.kind == "connect"
    assert (caught.value.retryable, caught.value.maybe_delivered) == (True, False)


@pytest.fixture
def throttling_server(dipsim: Dipsim) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A plain HTTPS server with dipsim's server certificate that answers every request with the
    next scripted (status, Retry-After) pair, for what dipsim does not send: Retry-After."""
    answers = [("429", "7"), ("503", "Fri, 01 Jan 2100 00:00:00 GMT")]
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(dict(self.headers))
            status, retry_after = answers[(len(seen) - 1) % len(answers)]
            self.send_response(int(status))
            self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca_dir = dipsim.ca_cert.parent
    context.load_cert_chain(ca_dir / "server.crt", ca_dir / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_retry_after_is_passed_on_in_seconds(
    dipsim: Dipsim, throttling_server: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = throttling_server
    with make_client(dipsim, dipsim.sds, SDS_API_KEY, base_url=url) as client:
        throttled = client.submit("IF-021", [if021()])
        unavailable = client.submit("IF-021", [if021()])

    assert (throttled.status, throttled.retryable, throttled.retry_after) == (429, True, 7.0)
    assert unavailable.status == 503
    assert unavailable.retry_after is not None
    assert unavailable.retry_after > 365 * 24 * 3600
    assert seen[0]["X-API-Key"] == SDS_API_KEY


def test_keys_that_do_not_match_their_certificates_are_refused_at_once(dipsim: Dipsim) -> None:
    before = set(glob.glob("/dev/shm/busbar-mtls-*"))
    with pytest.raises(ssl.SSLError, match="KEY_VALUES_MISMATCH"):
        DipClient(
            base_url=dipsim.base_url,
            api_key=SDS_API_KEY,
            mtls_certificate_pem=dipsim.sds.mtls_cert.read_bytes(),
            mtls_private_key_pem=dipsim.sup.mtls_key.read_bytes(),
            signing_certificate_pem=dipsim.sds.sign_cert.read_bytes(),
            signing_private_key_pem=dipsim.sds.sign_key.read_bytes(),
            server_ca_pem=dipsim.ca_cert.read_bytes(),
        )
    assert set(glob.glob("/dev/shm/busbar-mtls-*")) <= before
    with pytest.raises(ValueError, match="signing key"):
        DipClient(
            base_url=dipsim.base_url,
            api_key=SDS_API_KEY,
            mtls_certificate_pem=dipsim.sds.mtls_cert.read_bytes(),
            mtls_private_key_pem=dipsim.sds.mtls_key.read_bytes(),
            signing_certificate_pem=dipsim.sds.sign_cert.read_bytes(),
            signing_private_key_pem=dipsim.sup.sign_key.read_bytes(),
            server_ca_pem=dipsim.ca_cert.read_bytes(),
        )


# ---- configuration, replay, requeue, status -------------------------------------------------------


def test_webhooks_are_registered_and_deleted(dipsim: Dipsim, sds: DipClient) -> None:
    def hooks() -> set[tuple[str, str]]:
        rows = httpx.get(f"{dipsim.admin_url}/admin/webhooks").json()
        return {(row["channel"], row["recipient"]) for row in rows}

    created = sds.register_webhook(
        "IF-033", SDS_DIP_ID, "https://busbar.example/dip/if-033", max_message_count=100
    )
    status = sds.register_status_webhook(SDS_DIP_ID, "https://busbar.example/dip/status")

    assert (created.status, created.ok, status.status) == (201, True, 201)
    assert {("IF-033", SDS_DIP_ID), ("STATUS", SDS_DIP_ID)} <= hooks()

    deleted = sds.delete_webhook("IF-033", SDS_DIP_ID)
    status_deleted = sds.delete_status_webhook(SDS_DIP_ID)

    assert (deleted.status, status_deleted.status) == (204, 204)
    assert not {("IF-033", SDS_DIP_ID), ("STATUS", SDS_DIP_ID)} & hooks()


def test_a_webhook_for_someone_else_is_forbidden(sds: DipClient) -> None:
    response = sds.register_webhook("IF-021", SUP_DIP_ID, "https://busbar.example/dip/if-021")

    assert (response.status, response.action, response.retryable) == (403, Action.HALT, False)


def test_the_recipient_replays_requeues_and_acknowledges_a_message(
    sds: DipClient, sup: DipClient
) -> None:
    sent = sds.submit("IF-021", [if021()])
    transaction = sent.outcomes[0].transaction_id
    assert transaction

    replayed = sup.replay("IF-021", SUP_DIP_ID, transaction_ids=[transaction])

    assert replayed.status == 200, replayed.response_body
    [message] = replayed.data
    d0 = message["payload"]["CommonBlock"]["D0"]
    assert d0["transactionID"] == transaction
    assert d0["replayIndicator"] is True
    assert d0["publicationID"] == "PUB-021"

    requeued = sup.requeue("IF-021", SUP_DIP_ID, transaction_ids=[transaction])

    assert (requeued.status, requeued.data) == (200, {"requeued": 1})

    acknowledged = sup.send_status(
        [
            status_entry(
                code="RCP0000",
                text="Message Success",
                sender_dip_id=SUP_DIP_ID,
                recipient_dip_id=SDS_DIP_ID,
                transaction_id=transaction,
            )
        ]
    )

    assert acknowledged.status == 201, acknowledged.response_body
    assert acknowledged.data["messageArray"][0]["message"].startswith("MSG0000")


def test_a_replay_window_with_nothing_in_it_is_empty(sup: DipClient) -> None:
    now = dt.datetime.now(dt.UTC)

    response = sup.replay(
        "IF-021",
        SUP_DIP_ID,
        datetime_from=now + dt.timedelta(hours=1),
        datetime_to=now + dt.timedelta(hours=2),
        event="ActivePower",
        mpan="2000056535971",
        version="011",
    )

    assert (response.status, response.data) == (200, [])


def test_a_replay_names_at_most_100_transactions(sup: DipClient) -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        sup.replay("IF-021", SUP_DIP_ID, transaction_ids=[f"T-{i}" for i in range(101)])


# ---- secrets ---------------------------------------------------------------------------------


def test_the_client_leaves_no_key_material_on_disk_and_hides_its_secrets(dipsim: Dipsim) -> None:
    before = set(glob.glob("/dev/shm/busbar-mtls-*"))
    with make_client(dipsim, dipsim.sds, SDS_API_KEY) as client:
        assert set(glob.glob("/dev/shm/busbar-mtls-*")) <= before
        assert SDS_API_KEY not in repr(client)
        assert client.submit("IF-021", [if021()]).status == 201
