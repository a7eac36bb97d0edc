"""Signed delivery to a real HTTP receiver: Standard Webhooks signatures (verified with the
``standardwebhooks`` package), secret rotation, retries, the circuit breaker, parking, fairness
between tenants and the address check at delivery time."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import random
import ssl
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from core import netguard
from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.events import delivery, endpoints, services
from messaging.events.mappings import EventType
from messaging.events.models import Delivery, DeliveryAttempt, Event
from messaging.events.selectors import event_envelope
from messaging.events.signing import generate_secret
from messaging.models import Message, Transition
from messaging.store import services as store
from tenants.models import CircuitState, Connection, DownstreamEndpoint
from tests.conftest import build_world
from tests.messaging.receiver import black_hole, running_receiver
from tests.pki import TestCA, key_pem, name, new_key, pem


@pytest.fixture
def world(committed_db):
    return build_world()


def if021(seed: int) -> dict:
    rng = random.Random(seed)
    return dip.if021(
        sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng
    )


def record(tenant_id, count: int = 1, start: int = 1) -> list[int]:
    return services.record_events(
        tenant_id=tenant_id, messages=[(start + n, if021(start + n)) for n in range(count)]
    )


def add_endpoint(tenant_id, url: str, name: str = "billing"):
    with tenant_context(tenant_id):
        return endpoints.create_endpoint(name=name, url=url, event_types=["*"], actor="pytest")


def make_due(tenant_id) -> None:
    """Move every pending retry's time to now (a controlled clock, instead of waiting)."""
    with tenant_context(tenant_id):
        Delivery.objects.filter(state="pending").update(next_attempt_at=timezone.now())


def test_a_delivery_is_signed_per_standard_webhooks(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        issued = add_endpoint(world.acme.id, receiver.url)
        [event_id] = record(world.acme.id)
        result = delivery.deliver_due(tenant_id=world.acme.id)
    assert (result.claimed, result.delivered, result.failed) == (1, 1, 0)
    [request] = receiver.received
    body = Webhook(issued.secret).verify(request.body, request.headers)
    with tenant_context(world.acme.id):
        event = Event.objects.get(id=event_id)
        row = Delivery.objects.get()
        [attempt] = DeliveryAttempt.objects.all()
    assert request.headers["webhook-id"] == f"evt_{event.uid.hex}" == body["id"]
    assert body["type"] == EventType.CONSUMPTION_RECORDED
    assert body["data"]["mpan"] == event.subject
    assert body["mapping"] == "consumption@2"
    assert request.headers["content-type"] == "application/json"
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert (attempt.ok, attempt.http_status, attempt.attempt) == (True, 200, 1)
    assert attempt.latency_ms is not None
    # Another secret, or a tampered body, fails independent verification.
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(issued.secret).verify(request.body.replace(b"AI", b"AE"), request.headers)


def test_during_a_rotation_both_secrets_sign_and_afterwards_only_the_new(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        old = add_endpoint(world.acme.id, receiver.url)
        with tenant_context(world.acme.id):
            new = endpoints.rotate_endpoint_secret(
                endpoint=old.endpoint, actor="pytest", overlap=timedelta(hours=1)
            )
        record(world.acme.id, start=1)
        delivery.deliver_due(tenant_id=world.acme.id)
        with tenant_context(world.acme.id):
            endpoints.rotate_endpoint_secret(
                endpoint=old.endpoint, actor="pytest", overlap=timedelta(0), secret=new.secret
            )
        record(world.acme.id, start=2)
        delivery.deliver_due(tenant_id=world.acme.id)
    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(old.secret).verify(during.body, during.headers)
    Webhook(new.secret).verify(during.body, during.headers)
    # The rotation with no overlap ended every earlier secret, including the first one.
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new.secret).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old.secret).verify(after.body, after.headers)


def test_a_failure_is_retried_later_with_backoff_then_delivered(world, settings):
    settings.DOWNSTREAM_RETRY_BASE_SECONDS = 60
    with running_receiver(statuses=[503, 200]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        before = timezone.now()
        first = delivery.deliver_due(tenant_id=world.acme.id)
        with tenant_context(world.acme.id):
            row = Delivery.objects.get()
        assert (first.failed, row.state, row.attempts, row.last_status) == (1, "pending", 1, 503)
        assert before <= row.next_attempt_at <= timezone.now() + timedelta(seconds=60)
        assert "HTTP 503" in row.last_error
        # Not due yet: a round now sends nothing.
        with tenant_context(world.acme.id):
            Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(seconds=30))
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 0
        make_due(world.acme.id)
        second = delivery.deliver_due(tenant_id=world.acme.id)
    assert second.delivered == 1
    with tenant_context(world.acme.id):
        row = Delivery.objects.get()
        log = list(
            DeliveryAttempt.objects.order_by("attempt").values_list("attempt", "ok", "http_status")
        )
    assert (row.state, row.attempts) == ("delivered", 2)
    assert log == [(1, False, 503), (2, True, 200)]
    # The same event both times: the receiver deduplicates on webhook-id.
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_backoff_is_full_jitter_under_a_capped_exponential(settings):
    settings.DOWNSTREAM_RETRY_BASE_SECONDS = 2
    settings.DOWNSTREAM_RETRY_CAP_SECONDS = 100
    draws = {n: [delivery.backoff(n).total_seconds() for _ in range(200)] for n in (1, 3, 10)}
    assert all(0 <= d <= 2 for d in draws[1])
    assert all(0 <= d <= 8 for d in draws[3])
    assert all(0 <= d <= 100 for d in draws[10])
    assert max(draws[10]) > 8  # it does grow
    assert len(set(draws[3])) > 100  # and it is jittered


def test_a_delivery_is_parked_after_its_last_attempt(world, settings):
    settings.DOWNSTREAM_MAX_ATTEMPTS = 2
    with running_receiver(statuses=[500]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        delivery.deliver_due(tenant_id=world.acme.id)
        make_due(world.acme.id)
        delivery.deliver_due(tenant_id=world.acme.id)
        make_due(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 0
    with tenant_context(world.acme.id):
        row = Delivery.objects.get()
    assert (row.state, row.attempts) == ("parked", 2)
    assert row.last_error.startswith("parked after 2 attempts: HTTP 500")


def test_an_endpoint_answering_a_nul_byte_is_recorded_with_it_replaced(world, settings):
    """PostgreSQL's text holds no NUL: the endpoint's answer is kept with it replaced, so the
    attempt is recorded (and retried) instead of the round failing on every try."""
    with running_receiver(statuses=[500]) as receiver:
        receiver.answer = b"bad\x00thing"
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 1
    with tenant_context(world.acme.id):
        row = Delivery.objects.get()
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error == "HTTP 500: bad\ufffdthing"


def test_a_request_body_is_the_envelope_as_the_standard_encoder_writes_it(world, settings):
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:9"
    add_endpoint(world.acme.id, "http://127.0.0.1:9/hooks")
    services.publish_event(
        tenant_id=world.acme.id,
        type=EventType.OUTBOUND_STATE_CHANGED,
        payload={"to": "sent"},
        subject='Zoë "q" \\ \t\x01\x7f\u2028',
        source="outbound:ü\n",
    )
    with tenant_context(world.acme.id):
        [job] = delivery._jobs(delivery.claim_deliveries(tenant_id=world.acme.id))
        event = Event.objects.get()
    head = {k: v for k, v in event_envelope(event).items() if k != "data"}
    expected = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    # Byte for byte up to the payload, which goes in as PostgreSQL writes it.
    assert job.body == f'{expected[:-1]},"data":{{"to": "sent"}}}}'.encode()


def test_a_round_records_each_try_as_it_happened(world, settings):
    # One statement writes the deliveries' new states and the attempt rows: each attempt keeps
    # its own start (to the microsecond), endpoint and error, in the order of the round, and an
    # untried delivery gets no attempt and keeps its state.
    settings.DOWNSTREAM_MAX_ATTEMPTS = 1
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:9"
    endpoint = add_endpoint(world.acme.id, "http://127.0.0.1:9/hooks").endpoint
    record(world.acme.id, count=3)
    with tenant_context(world.acme.id):
        claimed = delivery.claim_deliveries(tenant_id=world.acme.id)
        jobs = delivery._jobs(claimed)
    started = dt.datetime(2026, 11, 2, 8, 30, 1, 123457, tzinfo=dt.UTC)
    outcomes = [
        delivery.Outcome(jobs[0], started, ok=True, tried=True, http_status=204, latency_ms=7),
        delivery.Outcome(
            jobs[1], started + timedelta(microseconds=1), ok=False, tried=True,
            http_status=500, latency_ms=9, error="HTTP 500: no",
        ),
        delivery.Outcome(jobs[2], started, ok=False, tried=False),
    ]  # fmt: skip
    delivery.record_outcomes(tenant_id=world.acme.id, outcomes=outcomes)
    with tenant_context(world.acme.id):
        attempts = list(DeliveryAttempt.objects.order_by("id"))
        rows = {d.id: d for d in Delivery.objects.all()}
    assert [
        (a.delivery_id, a.endpoint_id, a.tenant_id, a.attempt, a.started_at, a.latency_ms,
         a.http_status, a.ok, a.error)
        for a in attempts
    ] == [
        (jobs[0].delivery_id, endpoint.id, world.acme.id, 1, started, 7, 204, True, ""),
        (jobs[1].delivery_id, endpoint.id, world.acme.id, 1,
         started + timedelta(microseconds=1), 9, 500, False, "HTTP 500: no"),
    ]  # fmt: skip
    delivered, parked, untried = (rows[j.delivery_id] for j in jobs)
    assert (delivered.state, delivered.attempts, delivered.last_status) == ("delivered", 1, 204)
    assert delivered.delivered_at is not None
    assert delivered.lease_until is None
    assert (parked.state, parked.last_error) == ("parked", "parked after 1 attempts: HTTP 500: no")
    assert (untried.state, untried.attempts, untried.lease_until) == ("pending", 0, None)


def test_a_delivery_is_parked_once_the_time_budget_is_spent(world, settings):
    settings.DOWNSTREAM_BUDGET_SECONDS = 60
    with running_receiver(statuses=[500]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        with tenant_context(world.acme.id):
            Delivery.objects.update(created_at=timezone.now() - timedelta(minutes=5))
        delivery.deliver_due(tenant_id=world.acme.id)
    with tenant_context(world.acme.id):
        assert Delivery.objects.get().state == "parked"


def test_the_circuit_opens_probes_once_and_closes(world, settings):
    settings.DOWNSTREAM_CIRCUIT_THRESHOLD = 2
    settings.DOWNSTREAM_CIRCUIT_PAUSE_SECONDS = 600
    with running_receiver(statuses=[503, 503, 503, 200]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        issued = add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id, count=5)

        def circuit() -> DownstreamEndpoint:
            with tenant_context(world.acme.id):
                return DownstreamEndpoint.objects.get(id=issued.endpoint.id)

        # Each round sends one (the rest are released untried after the first failure).
        assert delivery.deliver_due(tenant_id=world.acme.id).failed == 1
        assert circuit().circuit_state == CircuitState.CLOSED
        make_due(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).failed == 1
        assert (circuit().circuit_state, circuit().consecutive_failures) == ("open", 2)
        # Open: nothing is claimed for it, though everything is due.
        make_due(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 0
        assert len(receiver.received) == 2
        # After the pause exactly one probe goes; it fails and the circuit opens again.
        with tenant_context(world.acme.id):
            DownstreamEndpoint.objects.update(circuit_retry_at=timezone.now())
        probe = delivery.deliver_due(tenant_id=world.acme.id)
        assert (probe.claimed, probe.failed) == (1, 1)
        assert circuit().circuit_state == CircuitState.OPEN
        # The next probe succeeds: the circuit closes and the backlog drains.
        with tenant_context(world.acme.id):
            DownstreamEndpoint.objects.update(circuit_retry_at=timezone.now())
        make_due(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 1
        assert (circuit().circuit_state, circuit().consecutive_failures) == ("closed", 0)
        make_due(world.acme.id)
        assert delivery.deliver_due(tenant_id=world.acme.id).delivered == 4
    with tenant_context(world.acme.id):
        assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_one_tenants_hung_endpoint_costs_one_timeout_and_never_holds_up_another(world, settings):
    settings.DOWNSTREAM_READ_TIMEOUT = 0.5
    delivery._client = None  # the pooled client takes its timeouts from settings when made
    try:
        with black_hole() as hung, running_receiver() as receiver:
            settings.BUSBAR_DOWNSTREAM_ALLOW = f"{receiver.allow},{hung.split('/')[2]}"
            add_endpoint(world.acme.id, hung)
            add_endpoint(world.globex.id, receiver.url)
            record(world.acme.id, count=10)
            record(world.globex.id, count=3, start=100)
            assert sorted(delivery.tenants_with_due_deliveries()) == sorted(
                [str(world.acme.id), str(world.globex.id)]
            )
            acme = delivery.deliver_due(tenant_id=world.acme.id)
            globex = delivery.deliver_due(tenant_id=world.globex.id)
    finally:
        delivery._client = None
    assert (acme.claimed, acme.failed, acme.delivered) == (10, 1, 0)
    assert (globex.claimed, globex.delivered) == (3, 3)
    with tenant_context(world.acme.id):
        [attempt] = DeliveryAttempt.objects.all()
        assert "Timeout" in attempt.error
        # The nine not tried are released at once, their attempts uncounted.
        untried = Delivery.objects.exclude(id=attempt.delivery_id)
        assert {(d.attempts, d.lease_until) for d in untried} == {(0, None)}
    assert len(receiver.received) == 3


def test_the_address_is_checked_again_at_delivery_time(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        settings.BUSBAR_DOWNSTREAM_ALLOW = ""  # the provider withdrew the permission
        result = delivery.deliver_due(tenant_id=world.acme.id)
    assert result.failed == 1
    assert receiver.received == []
    with tenant_context(world.acme.id):
        assert DeliveryAttempt.objects.get().error.startswith("refused: 127.0.0.1 resolves to")


def test_disabling_an_endpoint_cancels_what_it_is_owed(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        issued = add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id, count=2)
        with tenant_context(world.acme.id):
            endpoints.set_endpoint_enabled(endpoint=issued.endpoint, enabled=False, actor="pytest")
        assert delivery.deliver_due(tenant_id=world.acme.id).claimed == 0
        assert delivery.tenants_with_due_deliveries() == []
    with tenant_context(world.acme.id):
        assert set(Delivery.objects.values_list("state", flat=True)) == {"cancelled"}


def test_a_lapsed_lease_is_claimed_again(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id)
        claimed = delivery.claim_deliveries(tenant_id=world.acme.id)
        assert len(claimed) == 1
        assert delivery.claim_deliveries(tenant_id=world.acme.id) == []  # leased
        with tenant_context(world.acme.id):
            Delivery.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
        assert delivery.tenants_with_due_deliveries() == [str(world.acme.id)]
        assert delivery.deliver_due(tenant_id=world.acme.id).delivered == 1
    assert json.loads(receiver.received[0].body)["type"] == EventType.CONSUMPTION_RECORDED


def store_message(tenant_id, payload: dict) -> int:
    """One inbound message in the store, as the webhook would leave it, moved to normalised."""
    item = json.dumps({"payload": payload}).encode()
    with tenant_context(tenant_id):
        stored = store.store_inbound_delivery(
            tenant_id=tenant_id,
            connection_id=Connection.objects.get().id,
            channel_id=None,
            body=b"[" + item + b"]",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1,
                    length=len(item),
                    sha256=hashlib.sha256(item).digest(),
                    transaction_id="T-1",
                    interface_id="IF-021",
                )
            ],
        )
    [message_id] = stored.message_ids
    with tenant_context(tenant_id):
        for a, b in (("received", "valid"), ("valid", "normalised")):
            assert store.transition(
                tenant_id=tenant_id, message_ids=[message_id], from_state=a, to_state=b, actor="t"
            ) == [message_id]
    return message_id


def test_a_message_becomes_delivered_when_every_endpoint_has_its_events(world, settings):
    rng = random.Random(4)
    payload = dip.if021(
        sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng, days=2
    )
    message_id = store_message(world.acme.id, payload)
    with running_receiver() as good, running_receiver(statuses=[503, 200]) as flaky:
        settings.BUSBAR_DOWNSTREAM_ALLOW = f"{good.allow},{flaky.allow}"
        add_endpoint(world.acme.id, good.url, name="good")
        add_endpoint(world.acme.id, flaky.url, name="flaky")
        services.record_events(tenant_id=world.acme.id, messages=[(message_id, payload)])

        def state() -> str:
            with tenant_context(world.acme.id):
                return Message.objects.get(id=message_id).state

        delivery.deliver_due(tenant_id=world.acme.id)
        assert state() == "normalised"  # the flaky endpoint still waits for both events
        make_due(world.acme.id)
        delivery.deliver_due(tenant_id=world.acme.id)
        assert state() == "delivered"
    with tenant_context(world.acme.id):
        last = Transition.objects.filter(message_id=message_id).order_by("-at").first()
        assert (last.to_state, last.actor) == ("delivered", "delivery")
    assert len(good.received) == 2
    assert len(flaky.received) == 3  # one failure (the second event released untried), then two


def test_the_delivery_task_keeps_going_while_rounds_deliver(world, settings, monkeypatch):
    from messaging.events import tasks

    again: list[str] = []
    monkeypatch.setattr(tasks.deliver_due_task, "delay", lambda tenant: again.append(tenant))
    with running_receiver(statuses=[200]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        add_endpoint(world.acme.id, receiver.url)
        record(world.acme.id, count=3)
        assert again == [str(world.acme.id)]  # enqueued when the recording committed
        again.clear()
        assert tasks.deliver_due_task(str(world.acme.id)) == 3
        assert again == [str(world.acme.id)]  # it delivered: look again
        assert tasks.deliver_due_task(str(world.acme.id)) == 0
        assert again == [str(world.acme.id)]  # nothing left: stop
        receiver.statuses[:] = [500]
        record(world.acme.id, count=1, start=50)
        again.clear()
        assert tasks.deliver_due_task(str(world.acme.id)) == 0
        assert again == []  # only failures: the retry schedule takes over


def strict_ca() -> TestCA:
    """A CA that Python 3.13's strict verification accepts (key usage, key identifiers)."""
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("Tenant private CA"))
        .issuer_name(name("Tenant private CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return TestCA(key=key, cert=cert)


def tls_server_context(tmp_path, ca: TestCA, hostname: str) -> ssl.SSLContext:
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(hostname))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        # Python 3.13 verifies strictly (RFC 5280): a leaf names its issuer's key.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    (tmp_path / f"{hostname}.pem").write_bytes(pem(cert) + key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / f"{hostname}.pem")
    return context


def test_https_goes_to_the_checked_address_and_still_verifies_the_name(
    world, settings, tmp_path, monkeypatch
):
    ca = strict_ca()
    (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
    settings.DOWNSTREAM_CA_FILE = str(tmp_path / "ca.pem")
    # The tenant's name resolves to the loopback address the provider allowed.
    real_resolve = netguard._resolve
    monkeypatch.setattr(
        netguard,
        "_resolve",
        lambda host, port: (
            [ipaddress.ip_address("127.0.0.1")]
            if host.endswith(".test")
            else real_resolve(host, port)
        ),
    )
    delivery._client = None
    try:
        with running_receiver(tls=tls_server_context(tmp_path, ca, "hooks.test")) as receiver:
            settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
            issued = add_endpoint(world.acme.id, f"https://hooks.test:{receiver.port}/hooks")
            record(world.acme.id)
            result = delivery.deliver_due(tenant_id=world.acme.id)
            with tenant_context(world.acme.id):
                errors = list(DeliveryAttempt.objects.values_list("error", flat=True))
            assert result.delivered == 1, errors
            [request] = receiver.received
            assert request.headers["host"] == f"hooks.test:{receiver.port}"
            Webhook(issued.secret).verify(request.body, request.headers)
        # A certificate for another name is refused: pinning the address kept verification on.
        with running_receiver(tls=tls_server_context(tmp_path, ca, "other.test")) as impostor:
            settings.BUSBAR_DOWNSTREAM_ALLOW = impostor.allow
            with tenant_context(world.acme.id):
                endpoints.update_endpoint(
                    endpoint=issued.endpoint,
                    url=f"https://hooks.test:{impostor.port}/hooks",
                    event_types=["*"],
                    actor="pytest",
                )
            record(world.acme.id, start=2)
            assert delivery.deliver_due(tenant_id=world.acme.id).failed == 1
            assert impostor.received == []
        with tenant_context(world.acme.id):
            assert "CERTIFICATE_VERIFY_FAILED" in DeliveryAttempt.objects.get(ok=False).error
    finally:
        delivery._client = None


def test_the_sweeper_enqueues_one_round_per_tenant_with_work_due(world, settings, monkeypatch):
    from messaging.events import tasks

    enqueued: list[str] = []
    monkeypatch.setattr(tasks.deliver_due_task, "delay", lambda tenant: enqueued.append(tenant))
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:9"
    add_endpoint(world.acme.id, "http://127.0.0.1:9/hooks")
    add_endpoint(world.globex.id, "http://127.0.0.1:9/hooks")
    record(world.acme.id, count=3)
    record(world.globex.id, count=1, start=10)
    enqueued.clear()  # the on-commit enqueues of recording; the sweeper is what is tested
    with tenant_context(world.globex.id):
        Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert tasks.sweep_deliveries_task() == 1
    assert enqueued == [str(world.acme.id)]  # globex has nothing due yet, acme one round


def add_batch_endpoint(tenant_id, url: str, per_request: int):
    with tenant_context(tenant_id):
        return endpoints.create_endpoint(
            name="batch", url=url, event_types=["*"], actor="pytest", events_per_request=per_request
        )


def test_a_batch_endpoint_gets_several_events_per_signed_request_each_with_its_id(world, settings):
    with running_receiver() as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        issued = add_batch_endpoint(world.acme.id, receiver.url, per_request=4)
        event_ids = record(world.acme.id, count=10)
        result = delivery.deliver_due(tenant_id=world.acme.id)
    assert (result.claimed, result.delivered, result.failed) == (10, 10, 0)
    assert len(receiver.received) == 3  # 4 + 4 + 2
    carried = []
    for request in receiver.received:
        body = Webhook(issued.secret).verify(request.body, request.headers)
        assert body["type"] == "event.batch"
        assert request.headers["webhook-id"].startswith("batch_")
        assert body["data"]["count"] == len(body["data"]["events"]) <= 4
        carried += body["data"]["events"]
    with tenant_context(world.acme.id):
        envelopes = {
            f"evt_{e.uid.hex}": json.loads(DjangoJSONEncoder().encode(event_envelope(e)))
            for e in Event.objects.filter(id__in=event_ids)
        }
        states = set(Delivery.objects.values_list("state", "attempts"))
        assert DeliveryAttempt.objects.filter(ok=True).count() == 10
    # Each event once, as the pull API's envelope, keeping its own id for deduplication.
    assert sorted(e["id"] for e in carried) == sorted(envelopes)
    assert all(e == envelopes[e["id"]] for e in carried)
    assert {e["type"] for e in carried} == {EventType.CONSUMPTION_RECORDED}
    assert states == {("delivered", 1)}


def test_a_failed_batch_counts_once_for_the_circuit_and_releases_the_rest(world, settings):
    settings.DOWNSTREAM_CIRCUIT_THRESHOLD = 2
    with running_receiver(statuses=[503, 200]) as receiver:
        settings.BUSBAR_DOWNSTREAM_ALLOW = receiver.allow
        issued = add_batch_endpoint(world.acme.id, receiver.url, per_request=3)
        record(world.acme.id, count=7)
        failed = delivery.deliver_due(tenant_id=world.acme.id)
        with tenant_context(world.acme.id):
            endpoint = DownstreamEndpoint.objects.get(id=issued.endpoint.id)
            attempts = sorted(Delivery.objects.values_list("attempts", flat=True))
        assert (failed.claimed, failed.failed, failed.delivered) == (7, 3, 0)
        assert len(receiver.received) == 1  # the other two requests were never sent
        assert (endpoint.circuit_state, endpoint.consecutive_failures) == ("closed", 1)
        assert attempts == [0, 0, 0, 0, 1, 1, 1]
        make_due(world.acme.id)
        again = delivery.deliver_due(tenant_id=world.acme.id)
    assert (again.delivered, again.failed) == (7, 0)
    with tenant_context(world.acme.id):
        assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}
