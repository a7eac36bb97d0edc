"""Two tenants, every model: charlie (globex) sees none of acme's rows, and the reverse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.utils import timezone
from guardian.shortcuts import assign_perm

from core.audit import record_event
from core.tenancy import tenant_context, user_context
from messaging.events import endpoints as downstream
from messaging.events import services as events
from messaging.events.models import Delivery, DeliveryAttempt
from messaging.evidence import ledger, retention
from messaging.exceptions.models import ExceptionHandling, MessageException
from messaging.exceptions.services import ExceptionSpec, raise_exceptions
from messaging.models import (
    AuditArchive,
    BreakGlassGrant,
    DipExchange,
    EvidencePack,
    KeyVersion,
    ReconciliationResult,
    TenantValidationSettings,
)
from messaging.outbound import breaker, idempotency
from messaging.replay.models import Replay
from messaging.store import services as store
from tenants import certificates, enrolment, services
from tenants.models import Channel, ChannelChange, Connection, Membership, Notification, Tenant
from tests.pki import TestCA, pem


def tenant_models() -> list:
    """Every concrete model with a tenant column, plus Tenant itself (RLS on its id)."""
    found = [
        model
        for model in apps.get_models()
        if any(field.name in {"tenant", "tenant_id"} for field in model._meta.concrete_fields)
    ]
    return [*found, Tenant]


@pytest.fixture
def populated(world):
    return populate(world)


def populate(world):
    """Give both tenants a row in every tenant table the world leaves empty (also used by the
    database-attack tests)."""
    anchor = pem(TestCA.create().cert)
    for tenant_id, name in ((world.acme.id, "billing"), (world.globex.id, "crm")):
        with tenant_context(tenant_id):
            services.issue_api_credential(name=name, scopes=["read"], environment="UIT")
            record_event(action=f"{name}.event", actor="pytest")
            certificates.import_certificate(
                connection=Connection.objects.get(),
                purpose="trust_anchor",
                data=anchor,
                actor="pytest",
            )
            Notification.objects.create(role="certificate_admin", level="info", title=name)
            # An invitation to the other tenant's person, and an enrolment link for one's own.
            outsider, own = (
                (world.charlie.user, world.alice.user)
                if tenant_id == world.acme.id
                else (world.alice.user, world.charlie.user)
            )
            services.invite_member(
                username=outsider.username, email="x@example.com", roles=["viewer"], actor=name
            )
            enrolment.issue_enrolment_link(user_id=own.pk, issued_by=name)
            # Object permissions, per user and per group, on a channel and a connection.
            group = Group.objects.get_or_create(name=f"{name}-operators")[0]
            for target in (Channel.objects.get(), Connection.objects.get()):
                model_name = target._meta.model_name
                assign_perm(f"tenants.view_{model_name}", world.alice.user, target)
                assign_perm(f"tenants.view_{model_name}", group, target)
            DipExchange.objects.create(
                connection=Connection.objects.get(),
                operation="submit",
                method="POST",
                url="https://dip.example/dip-channel/IF-021",
                started_at=timezone.now(),
                outcome="accepted",
                body_sha256="0" * 64,
                signing_certificate_fingerprint="a" * 64,
                mtls_certificate_fingerprint="b" * 64,
                sender_references=[f"S-{name}"],
            )
            raise_exceptions(
                specs=[ExceptionSpec(code="RCP1001", title=name, category="technical")]
            )
            # its handling history, and a replay request waiting for approval
            ExceptionHandling.objects.create(
                exception=MessageException.objects.get(), action="commented", actor=name
            )
            Replay.objects.create(
                kind="inbound",
                connection=Connection.objects.get(),
                production=True,
                reason_code="other",
                reason_text=name,
                requested_by=name,
            )
            TenantValidationSettings.objects.create()
            BreakGlassGrant.objects.create(
                staff_user=own,
                staff_username=own.username,
                reason=f"{name} incident",
                granted_at=timezone.now(),
                expires_at=timezone.now() + timedelta(hours=1),
            )
            KeyVersion.objects.create(
                connection=Connection.objects.get(),
                key=f"IF-021|{name}|AI|2026-01-01",
                version="2026-01-02T00:00:00Z",
                message_id=1,
            )
            # outbound: a failure counted on the connection's breaker, a client's idempotency key
            breaker.record_failure(connection_id=Connection.objects.get().id, error="timeout")
            idempotency.run_idempotent(
                key=f"key-{name}",
                method="POST",
                path="/api/v1/outbound/messages",
                data={"name": name},
                handler=lambda: idempotency.Answer(status=202, body={"accepted": True}),
            )
            _populate_message_store(tenant_id)
            # A channel change (history) and a reconciliation run's result.
            channel = Channel.objects.get()
            ChannelChange.objects.create(
                channel=channel,
                before={"status": channel.status},
                after={"status": "live"},
                reason=name,
                requires_approval=True,
                proposed_by_name=name,
            )
            ReconciliationResult.objects.create(
                control="cadence",
                channel=channel,
                window_from=timezone.now() - timedelta(hours=1),
                window_to=timezone.now(),
                expected=1,
                found=0,
                status="breach",
                summary=name,
                run_at=timezone.now(),
            )
            # A downstream endpoint with its secret, an event owed to it and one attempt.
            endpoint = downstream.create_endpoint(
                name=name, url="https://93.184.216.34/hooks", event_types=["*"], actor="pytest"
            ).endpoint
            events.publish_event(
                tenant_id=tenant_id, type="outbound.state_changed", payload={"to": "sent"}
            )
            DeliveryAttempt.objects.create(
                delivery=Delivery.objects.get(),
                endpoint=endpoint,
                attempt=1,
                started_at=timezone.now(),
                ok=True,
            )
    return world


def _populate_message_store(tenant_id) -> None:
    """A delivery with one message, moved once, with one finding: a row in every store table."""
    body = b'[{"payload": {}}]'
    connection = Connection.objects.get()
    stored = store.store_inbound_delivery(
        tenant_id=tenant_id,
        connection_id=connection.id,
        channel_id=None,
        body=body,
        headers={},
        messages=[
            store.InboundMessageFacts(
                offset=1, length=len(body) - 2, sha256=b"\x00" * 32, interface_id="IF-021"
            )
        ],
    )
    store.transition(
        tenant_id=tenant_id,
        message_ids=stored.message_ids,
        from_state="received",
        to_state="invalid",
        actor="pytest",
    )
    finding = SimpleNamespace(
        stage="syntactic", severity="fatal", code="SCHEMA", path="$", text="empty", rule="r1"
    )
    store.record_findings(tenant_id=tenant_id, findings=[(stored.message_ids[0], finding)])
    # evidence: a seal over it (with its entries), a verification run and a requested pack
    ledger.seal_tenant(tenant_id=tenant_id, now=timezone.now() + timedelta(hours=1))
    ledger.verify_ledger(tenant_id=tenant_id)
    retention.set_payload_retention(days=365, actor="pytest")
    EvidencePack.objects.create(
        requested_by="pytest",
        period_from=timezone.now() - timedelta(days=1),
        period_to=timezone.now(),
    )
    AuditArchive.objects.create(
        period_from=datetime(2026, 1, 1, tzinfo=UTC),
        period_to=datetime(2026, 2, 1, tzinfo=UTC),
        events=0,
        sha256="0" * 64,
        file_name="audit-2026-01.jsonl.zst",
        purge_after=datetime(2027, 5, 1, tzinfo=UTC),
    )


def tenant_of(row) -> object:
    return row.id if isinstance(row, Tenant) else row.tenant_id


@pytest.mark.parametrize("model", tenant_models(), ids=lambda m: m._meta.label)
def test_each_tenant_sees_only_its_own_rows(populated, model):
    world = populated
    with tenant_context(world.acme.id):
        acme_rows = list(model.objects.all())
    with tenant_context(world.globex.id):
        globex_rows = list(model.objects.all())
    assert {tenant_of(row) for row in acme_rows} <= {world.acme.id}
    assert {tenant_of(row) for row in globex_rows} <= {world.globex.id}
    assert acme_rows, f"the fixture should give acme some {model._meta.label} rows"
    assert globex_rows


def test_a_user_sees_only_their_own_memberships_before_choosing_a_tenant(world):
    with user_context(world.charlie.user.pk):
        assert [m.tenant_id for m in Membership.objects.all()] == [world.globex.id]
        assert [t.slug for t in Tenant.objects.all()] == ["globex"]
    with user_context(world.alice.user.pk):
        assert {m.user.username for m in Membership.objects.all()} == {"alice"}


def test_guardian_permissions_for_a_channel_stay_in_the_tenant(world):
    from guardian.shortcuts import assign_perm, get_perms

    from tenants.models import Channel, ChannelUserObjectPermission

    with tenant_context(world.acme.id):
        channel = Channel.objects.get()
        assign_perm("tenants.view_channel", world.bob.user, channel)
        assert "view_channel" in get_perms(world.bob.user, channel)
        assert ChannelUserObjectPermission.objects.count() == 1
    with tenant_context(world.globex.id):
        assert ChannelUserObjectPermission.objects.count() == 0


def test_changing_your_own_roles_touches_only_the_current_tenant(world):
    """Inside a request both contexts are set; the user context must not widen a write."""
    with tenant_context(world.globex.id):
        services.add_member(user=world.alice.user, roles=["viewer"])
    with user_context(world.alice.user.pk), tenant_context(world.acme.id):
        services.add_member(user=world.alice.user, roles=["tenant_admin"])
    with tenant_context(world.globex.id):
        assert Membership.objects.get(user=world.alice.user).roles == ["viewer"]
    with tenant_context(world.acme.id):
        assert Membership.objects.get(user=world.alice.user).roles == ["tenant_admin"]
