"""Reconciliation controls on the real store (PostgreSQL, RLS): quiet channels, processing,
acknowledgements, appointment chains and the daily IF-021, each run kept, with notices."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from core.tenancy import tenant_context
from messaging.models import ConnectionBreaker
from messaging.outbound import breaker
from messaging.reconciliation import selectors
from messaging.reconciliation.models import Control, ReconciliationResult, ResultStatus
from messaging.reconciliation.services import run_reconciliation
from messaging.store import services as store
from tenants import services
from tenants.models import Channel, Connection, Notification

NO_DIP = [c for c in Control.values if c != Control.DIP_RECORD]


def receive(channel: Channel, *facts: dict) -> list[int]:
    """Store one delivery of messages on ``channel`` as the webhook would."""
    body = b"[" + b",".join(b'{"payload":{}}' for _ in facts) + b"]"
    stored = store.store_inbound_delivery(
        tenant_id=channel.tenant_id,
        connection_id=channel.connection_id,
        channel_id=channel.id,
        body=body,
        headers={},
        messages=[
            store.InboundMessageFacts(
                offset=1 + 15 * n,
                length=14,
                sha256=hashlib.sha256(repr(f).encode()).digest(),
                interface_id=channel.interface_id,
                **f,
            )
            for n, f in enumerate(facts)
        ],
    )
    return stored.message_ids


def channel(interface_id: str, direction: str = "inbound", **fields: object) -> Channel:
    connection = Connection.objects.get()
    existing = Channel.objects.filter(
        connection=connection, interface_id=interface_id, direction=direction
    ).first()
    if existing:
        Channel.objects.filter(pk=existing.pk).update(**fields)
        existing.refresh_from_db()
        return existing
    return services.create_channel(
        connection=connection, interface_id=interface_id, direction=direction, **fields
    )


def results(control: str) -> list[ReconciliationResult]:
    return [r for r in selectors.list_latest_results() if r.control == control]


def test_a_quiet_channel_is_a_breach_that_notifies_once_and_clears_when_traffic_comes(
    world, django_capture_on_commit_callbacks
):
    with tenant_context(world.acme.id):
        quiet = channel("IF-021", expected_cadence=timedelta(hours=1))
        with django_capture_on_commit_callbacks(execute=True):
            run_reconciliation(controls=[Control.CADENCE])
        (verdict,) = results(Control.CADENCE)
        assert (verdict.status, verdict.found, verdict.channel_id) == ("breach", 0, quiet.id)
        assert "quiet" in verdict.summary
        raised = Notification.objects.filter(condition=f"channel_quiet:{quiet.id}")
        assert sorted(raised.values_list("role", flat=True)) == [
            "message_operator",
            "tenant_admin",
        ]
        assert sorted(to for m in mail.outbox for to in m.to) == [
            "alice@acme.example",
            "bob@acme.example",
        ]
        assert "quiet" in mail.outbox[0].subject

        # The next runs find it still quiet: kept as results, but nobody is told again.
        with django_capture_on_commit_callbacks(execute=True):
            run_reconciliation(controls=[Control.CADENCE])
        assert raised.count() == 2
        assert len(mail.outbox) == 2
        assert ReconciliationResult.objects.filter(control=Control.CADENCE).count() == 2

        receive(quiet, {"transaction_id": "T-1", "mpan": "2000056535971"})
        run_reconciliation(controls=[Control.CADENCE])
        (verdict,) = results(Control.CADENCE)
        assert (verdict.status, verdict.found) == ("ok", 1)
        assert not raised.filter(resolved_at__isnull=True).exists()
    with tenant_context(world.globex.id):
        assert Notification.objects.count() == 0
        assert ReconciliationResult.objects.count() == 0


def test_an_incomplete_appointment_chain_is_reported_with_its_missing_step(world):
    with tenant_context(world.acme.id):
        for interface_id, direction in (
            ("IF-031", "outbound"),
            ("IF-032", "inbound"),
            ("IF-035", "inbound"),
            ("IF-036", "inbound"),
        ):
            channel(interface_id, direction)
        complete, stalled, young = "2000056535971", "1900012374324", "1200000000015"
        receive(channel("IF-032"), {"transaction_id": "A1", "mpan": complete})
        receive(channel("IF-035"), {"transaction_id": "A2", "mpan": complete})
        receive(channel("IF-036"), {"transaction_id": "A3", "mpan": complete})
        # Acknowledged by the Registration Service, but no outcome since.
        receive(channel("IF-032"), {"transaction_id": "B1", "mpan": stalled})
        now = timezone.now() + timedelta(days=4)
        run_reconciliation(controls=[Control.APPOINTMENT_CHAIN], now=now)
        (verdict,) = results(Control.APPOINTMENT_CHAIN)
        assert verdict.status == ResultStatus.BREACH
        assert (verdict.expected, verdict.found) == (2, 1)
        (incomplete,) = verdict.detail["incomplete"]
        assert incomplete["mpan"] == stalled
        assert incomplete["missing_step"] == "IF-035"
        assert incomplete["seen"] == ["IF-032"]
        assert "IF-035" in verdict.summary
        # A supplier never sees the provider's leg: IF-033/IF-034 are not expected of acme.
        assert verdict.detail["steps_expected"] == ["IF-031", "IF-032", "IF-035", "IF-036"]

        # Within its deadline, the same chain is in flight, not a breach.
        receive(channel("IF-032"), {"transaction_id": "C1", "mpan": young})
        run_reconciliation(controls=[Control.APPOINTMENT_CHAIN], now=timezone.now())
        (verdict,) = results(Control.APPOINTMENT_CHAIN)
        assert verdict.status == ResultStatus.PENDING
        assert verdict.detail["pending"] == 2


def test_the_daily_consumption_control_names_the_mpan_without_a_new_if021(world):
    with tenant_context(world.acme.id):
        if021 = channel("IF-021")
        receive(if021, {"transaction_id": "D1", "mpan": "2000056535971"})
        run_reconciliation(controls=[Control.DAILY_CONSUMPTION])
        assert results(Control.DAILY_CONSUMPTION)[0].status == ResultStatus.OK
        run_reconciliation(
            controls=[Control.DAILY_CONSUMPTION], now=timezone.now() + timedelta(days=2)
        )
        (verdict,) = results(Control.DAILY_CONSUMPTION)
        assert verdict.status == ResultStatus.BREACH
        assert verdict.detail["missing_mpans"] == ["2000056535971"]


def test_processing_and_acknowledgement_controls_read_the_rollups(world):
    with tenant_context(world.acme.id):
        if021 = channel("IF-021")
        ids = receive(if021, {"transaction_id": "P1"}, {"transaction_id": "P2"})
        store.transition(
            tenant_id=world.acme.id,
            message_ids=ids[:1],
            from_state="received",
            to_state="failed",
            actor="pytest",
        )
        outbound = channel("IF-041", "outbound")
        _, sent = store.store_outbound_messages(
            tenant_id=world.acme.id,
            connection_id=outbound.connection_id,
            channel_id=outbound.id,
            source_body=b"{}",
            headers={},
            messages=[store.OutboundMessageFacts(interface_id="IF-041")],
        )
        for to_state in ("ready", "sending", "sent"):
            store.transition(
                tenant_id=world.acme.id,
                message_ids=sent,
                from_state={"ready": "accepted", "sending": "ready", "sent": "sending"}[to_state],
                to_state=to_state,
                actor="pytest",
            )
        run_reconciliation(controls=NO_DIP, now=timezone.now() + timedelta(hours=2))
        (processed,) = results(Control.PROCESSED)
        assert (processed.status, processed.expected) == ("breach", 2)
        assert processed.detail["failed_now"] == 1
        assert processed.detail["waiting_now"] == 1
        (acknowledged,) = results(Control.ACKNOWLEDGED)
        assert (acknowledged.status, acknowledged.expected, acknowledged.found) == ("breach", 1, 0)
        assert acknowledged.detail["awaiting_now"] == 1


def test_an_open_circuit_notifies_once_and_its_closing_clears_it(
    world, django_capture_on_commit_callbacks
):
    with tenant_context(world.acme.id):
        connection_id = Connection.objects.get().id
        for _ in range(breaker.THRESHOLD):
            breaker.record_failure(connection_id=connection_id, error="503 from the DIP")
        assert ConnectionBreaker.objects.get().state == "open"
        with django_capture_on_commit_callbacks(execute=True):
            run_reconciliation(controls=[])
            run_reconciliation(controls=[])
        condition = f"circuit_open:connection:{connection_id}"
        notices = Notification.objects.filter(condition=condition)
        assert notices.count() == 2  # one per role, once
        assert notices.first().level == "critical"
        assert len(mail.outbox) == 2
        breaker.record_success(connection_id=connection_id)
        run_reconciliation(controls=[])
        assert not notices.filter(resolved_at__isnull=True).exists()


def test_an_unknown_control_is_refused_by_name(world):
    with tenant_context(world.acme.id), pytest.raises(ValueError, match="nonsense"):
        run_reconciliation(controls=["nonsense"])


def test_an_out_of_balance_control_shows_in_the_metrics_the_alert_rules_read(committed_db):
    from prometheus_client import REGISTRY

    from tests.conftest import build_world

    world = build_world()
    with tenant_context(world.acme.id):
        channel("IF-021", expected_cadence=timedelta(hours=1))
        run_reconciliation(controls=[Control.CADENCE, Control.PROCESSED])
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in REGISTRY.collect()
        for s in family.samples
    }
    quiet = frozenset({"tenant": "acme", "control": "cadence"}.items())
    processed = frozenset({"tenant": "acme", "control": "processed"}.items())
    assert samples[("busbar_reconciliation_out_of_balance", quiet)] == 1
    assert samples[("busbar_reconciliation_out_of_balance", processed)] == 0
    last_run = samples[
        ("busbar_reconciliation_last_run_timestamp_seconds", frozenset({("tenant", "acme")}))
    ]
    assert abs(last_run - timezone.now().timestamp()) < 3600
    assert not any(
        dict(labels).get("tenant") == "globex"
        for name, labels in samples
        if name.startswith("busbar_reconciliation")
    )


def test_client_systems_read_verdicts_and_channel_history_by_api(world):
    from django.test import Client

    from tenants import channel_changes

    with tenant_context(world.acme.id):
        quiet = channel("IF-021", expected_cadence=timedelta(hours=1))
        run_reconciliation(controls=[Control.CADENCE])
        channel_changes.propose_channel_change(
            channel=quiet, changes={"status": "live"}, reason="go live", user=world.bob.user
        )
        key = services.issue_api_credential(name="ops", scopes=["read"], environment="UIT").key
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
    verdicts = api.get("/api/v1/reconciliation/results/", {"control": "cadence"}).json()
    assert [(v["interface_id"], v["status"]) for v in verdicts] == [("IF-021", "breach")]
    assert api.get("/api/v1/reconciliation/results/", {"control": "x"}).status_code == 400
    (change,) = api.get(f"/api/v1/channels/{quiet.id}/changes/").json()
    assert (change["state"], change["after"], change["proposed_by"]) == (
        "applied",
        {"status": "live"},
        "bob",
    )
    assert "webhook_token" not in str(change)
