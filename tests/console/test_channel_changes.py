"""Channel configuration as a controlled asset: a production channel changes only with a second
person's approval; the change is applied, rolled back, kept in history and sealed as evidence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.evidence import ledger
from messaging.models import SealLeaf
from tenants import channel_changes, services
from tenants.models import Channel, ChannelChange, Membership, Notification, Role
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


@pytest.fixture
def production(world):
    """acme's production connection with an inbound IF-021 channel; alice also approves, and
    dora is a second approver."""
    with tenant_context(world.acme.id):
        Membership.objects.filter(user=world.alice.user).update(
            roles=[Role.TENANT_ADMIN, Role.CERTIFICATE_ADMIN, Role.APPROVER]
        )
        dora = services.create_user(
            username="dora", email="dora@acme.example", password=PASSWORD, roles=[Role.APPROVER]
        )
        identity = services.create_identity(mpid="ACMP", role_code="SUP", dip_id="1000000009")
        connection = services.create_connection(
            identity=identity,
            environment="PRD",
            dip_base_url="https://dip.example",
            api_key="acme-prd-api-key-123",
        )
        channel = services.create_channel(
            connection=connection, interface_id="IF-021", direction="inbound"
        )
    return world, channel, dora


def test_a_production_change_waits_for_a_second_person_then_applies_and_rolls_back(production):
    world, channel, dora = production
    with tenant_context(world.acme.id):
        token = channel.webhook_token
        change = channel_changes.propose_channel_change(
            channel=channel,
            changes={"status": "live", "expected_cadence": 3600, "webhook": True},
            reason="go live",
            user=world.alice.user,
        )
        assert change.requires_approval
        assert change.before == {
            "status": "test",
            "expected_cadence": None,
            "webhook": f"...{token[-4:]}",
        }
        assert change.after["status"] == "live"
        assert change.after["expected_cadence"] == 3600
        channel.refresh_from_db()
        assert (channel.status, channel.expected_cadence, channel.webhook_token) == (
            "test",
            None,
            token,
        ), "nothing changes before approval"
        # Approvers hear of it in the console.
        assert Notification.objects.filter(
            condition=f"channel_change:{change.id}", role="approver"
        ).exists()

        # The proposer holds the approver role too, but four eyes means another person.
        with pytest.raises(ValidationError, match="second person"):
            channel_changes.approve_channel_change(change=change, user=world.alice.user)
        # A message operator is no approver.
        with pytest.raises(ValidationError, match="only an approver"):
            channel_changes.approve_channel_change(change=change, user=world.bob.user)
        channel.refresh_from_db()
        assert channel.status == "test"

        channel_changes.approve_channel_change(change=change, user=dora, note="checked")
        channel.refresh_from_db()
        change.refresh_from_db()
        assert change.state == "applied"
        assert change.decided_by_name == "dora"
        assert (channel.status, channel.expected_cadence) == ("live", timedelta(hours=1))
        assert channel.webhook_token == change.webhook_token_after != token
        assert not Notification.objects.filter(
            condition=f"channel_change:{change.id}", resolved_at__isnull=True
        ).exists()

        with pytest.raises(ValidationError, match="applied"):
            channel_changes.approve_channel_change(change=change, user=dora)
        channel_changes.rollback_channel_change(
            change=change, user=world.alice.user, reason="the sender is not ready"
        )
        channel.refresh_from_db()
        assert (channel.status, channel.expected_cadence, channel.webhook_token) == (
            "test",
            None,
            token,
        )
        change.refresh_from_db()
        assert (change.state, change.rolled_back_by_name) == ("rolled_back", "alice")

        actions = list(
            AuditEvent.objects.filter(object_type="channel", object_id=str(channel.id))
            .order_by("occurred_at")
            .values_list("action", "actor")
        )
        assert actions == [
            ("channel.created", "system"),
            ("channel.change_proposed", "alice"),
            ("channel.change_approved", "dora"),
            ("channel.change_applied", "dora"),
            ("channel.change_rolled_back", "alice"),
        ]
        # Sealed into the tenant's evidence ledger like every operator action.
        later = timezone.now() + timedelta(hours=1)
        for _ in range(10):
            if ledger.seal_tenant(tenant_id=world.acme.id, now=later) is None:
                break
        change_events = AuditEvent.objects.filter(action__startswith="channel.change_")
        sealed = set(SealLeaf.objects.filter(source="audit").values_list("ref", flat=True))
        assert {str(e.id) for e in change_events} <= sealed
        assert change_events.count() == 4


def test_a_rejected_change_changes_nothing_and_a_second_proposal_waits_its_turn(production):
    world, channel, dora = production
    with tenant_context(world.acme.id):
        change = channel_changes.propose_channel_change(
            channel=channel, changes={"status": "live"}, reason="go live", user=world.bob.user
        )
        with pytest.raises(ValidationError, match="awaiting approval"):
            channel_changes.propose_channel_change(
                channel=channel,
                changes={"pinned_schema_version": "011"},
                reason="pin",
                user=world.alice.user,
            )
        channel_changes.reject_channel_change(change=change, user=dora, note="not yet")
        channel.refresh_from_db()
        assert channel.status == "test"
        assert ChannelChange.objects.get().state == "rejected"
        with pytest.raises(ValidationError, match="changes nothing"):
            channel_changes.propose_channel_change(
                channel=channel, changes={"status": "test"}, reason="no-op", user=world.bob.user
            )
        with pytest.raises(ValidationError) as bad:
            channel_changes.propose_channel_change(
                channel=channel,
                changes={"pinned_schema_version": "v11", "expected_cadence": 5},
                reason="typo",
                user=world.bob.user,
            )
        assert set(bad.value.message_dict) == {"pinned_schema_version", "expected_cadence"}


def test_a_test_connections_channel_changes_at_once_and_keeps_its_history(world):
    with tenant_context(world.acme.id):
        channel = Channel.objects.get()
        change = channel_changes.propose_channel_change(
            channel=channel,
            changes={"pinned_schema_version": "011"},
            reason="pin to the current schema",
            user=world.bob.user,
        )
        channel.refresh_from_db()
        assert (change.state, change.requires_approval) == ("applied", False)
        assert channel.pinned_schema_version == "011"


def test_the_console_refuses_an_approval_by_the_proposer_and_applies_a_second_persons(
    production,
):
    world, channel, _dora = production
    bob, alice, dora = signed_in("bob"), signed_in("alice"), signed_in("dora")
    page = bob.get(f"/channels/{channel.id}/")
    assert page.status_code == 200
    assert b"Propose a change" in page.content
    answer = bob.post(
        f"/channels/{channel.id}/changes/",
        {"status": "live", "reason": "sender ready"},
    )
    assert answer.status_code == 302
    with tenant_context(world.acme.id):
        change = ChannelChange.objects.get()
    page = dora.get(f"/channels/{channel.id}/")
    assert b'data-testid="pending-change"' in page.content
    assert b"Approve and apply" in page.content
    # bob (operator) may not approve at all; alice approves as a second person.
    assert bob.post(f"/channel-changes/{change.id}/approve/").status_code == 403
    assert alice.post(f"/channel-changes/{change.id}/approve/").status_code == 302
    with tenant_context(world.acme.id):
        channel.refresh_from_db()
        assert channel.status == "live"
        change.refresh_from_db()
        assert change.decided_by_name == "alice"
    # Another tenant's person cannot see it.
    assert signed_in("charlie").get(f"/channels/{channel.id}/").status_code == 404
    page = dora.get(f"/channels/{channel.id}/")
    assert b'data-state="applied"' in page.content
    assert (
        dora.post(f"/channel-changes/{change.id}/rollback/", {"reason": "wrong day"}).status_code
        == 302
    )
    with tenant_context(world.acme.id):
        channel.refresh_from_db()
        assert channel.status == "test"
