"""Break-glass: provider support reads MPANs and payloads only under an active grant, and the
database is what checks it (direct SQL as the support role, no application code in between)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import ProgrammingError, connection, connections
from django.utils import timezone

from core.models import AuditEvent
from core.tenancy import tenant_context, user_context
from messaging import breakglass
from messaging.models import BreakGlassGrant
from messaging.store import services as store
from tenants.models import Connection, Notification
from tests.conftest import build_world

PAYLOAD = b'{"mpan": "1200023305967", "reading": 42}'


def store_message(tenant_id, *, mpan: str) -> int:
    body = b"[" + PAYLOAD + b"]"
    with tenant_context(tenant_id):
        stored = store.store_inbound_delivery(
            tenant_id=tenant_id,
            connection_id=Connection.objects.get().id,
            channel_id=None,
            body=body,
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1,
                    length=len(PAYLOAD),
                    sha256=hashlib.sha256(PAYLOAD).digest(),
                    interface_id="IF-021",
                    mpan=mpan,
                )
            ],
        )
    return stored.message_ids[0]


def staff_member(username: str = "sam"):
    return get_user_model().objects.create_user(username, password="x" * 16, is_staff=True)


def support_sql(sql: str, params: list, *, user_id: int | None, tenant=None) -> list[tuple]:
    """``sql`` run as the support role, with ``app.user_id`` (and optionally ``app.tenant_id``)
    set as the session would set them."""
    support = connections["support"]
    try:
        with user_context(user_id, using="support"), support.cursor() as cursor:
            if tenant is not None:
                cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant)])
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        support.close()


def grant(tenant_id, staff, *, expires_in: timedelta, ended: bool = False) -> BreakGlassGrant:
    """A grant row written directly (the runtime role, in the tenant's context), so a test can
    make one that has already expired."""
    now = timezone.now()
    with tenant_context(tenant_id):
        return BreakGlassGrant.objects.create(
            staff_user=staff,
            staff_username=staff.username,
            reason="INC-42 checking a corrupt IF-021",
            granted_at=now - timedelta(hours=2),
            expires_at=now + expires_in,
            ended_at=now - timedelta(minutes=1) if ended else None,
        )


CONTENT = "SELECT tenant_id, id, mpan, body_zstd IS NOT NULL FROM support_message_content"


@pytest.fixture
def two_tenants_messages(committed_db):
    world = build_world()
    acme_message = store_message(world.acme.id, mpan="1200023305967")
    globex_message = store_message(world.globex.id, mpan="1900000000014")
    return world, acme_message, globex_message


def test_the_support_role_cannot_select_mpans_or_payloads_from_the_tables(two_tenants_messages):
    staff = staff_member()
    for forbidden in (
        "SELECT mpan FROM messaging_message",
        "SELECT body_zstd FROM messaging_raw",
        "SELECT * FROM messaging_message",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"):
            support_sql(forbidden, [], user_id=staff.pk)
    # metadata stays readable across tenants
    assert len(support_sql("SELECT id, state FROM messaging_message", [], user_id=staff.pk)) == 2


def test_without_a_grant_the_content_view_returns_nothing(two_tenants_messages):
    world, *_ = two_tenants_messages
    staff = staff_member()
    assert support_sql(CONTENT, [], user_id=staff.pk) == []
    # Setting the tenant, which passes the tenant policy, does not open content either.
    assert support_sql(CONTENT, [], user_id=staff.pk, tenant=world.acme.id) == []
    assert support_sql(CONTENT, [], user_id=None, tenant=world.acme.id) == []


def test_an_expired_or_ended_grant_opens_nothing(two_tenants_messages):
    world, *_ = two_tenants_messages
    staff = staff_member()
    grant(world.acme.id, staff, expires_in=-timedelta(seconds=1))
    assert support_sql(CONTENT, [], user_id=staff.pk) == []
    grant(world.acme.id, staff, expires_in=timedelta(hours=1), ended=True)
    assert support_sql(CONTENT, [], user_id=staff.pk) == []


def test_an_active_grant_opens_that_tenant_only_and_only_for_its_holder(two_tenants_messages):
    world, acme_message, _ = two_tenants_messages
    staff, colleague = staff_member(), staff_member("sue")
    grant(world.acme.id, staff, expires_in=timedelta(hours=1))
    rows = support_sql(CONTENT, [], user_id=staff.pk)
    assert rows == [(world.acme.id, acme_message, "1200023305967", True)]
    # globex's rows stay closed even when the session claims globex as its tenant
    assert support_sql(
        CONTENT + " WHERE tenant_id = %s", [str(world.globex.id)], user_id=staff.pk,
        tenant=world.globex.id,
    ) == []  # fmt: skip
    # another staff member (or no user at all) gets nothing from sam's grant
    assert support_sql(CONTENT, [], user_id=colleague.pk) == []
    assert support_sql(CONTENT, [], user_id=None) == []


def test_the_runtime_role_can_neither_read_the_view_nor_rewrite_a_grant(two_tenants_messages):
    world, *_ = two_tenants_messages
    staff = staff_member()
    row = grant(world.acme.id, staff, expires_in=timedelta(hours=1))
    with pytest.raises(ProgrammingError, match="permission denied"), connection.cursor() as c:
        c.execute("SELECT * FROM support_message_content")
    connection.close()
    for change in (
        "UPDATE messaging_breakglassgrant SET expires_at = now() + interval '1 year'",
        "UPDATE messaging_breakglassgrant SET staff_user_id = 1",
        "DELETE FROM messaging_breakglassgrant",
    ):
        with (
            pytest.raises(ProgrammingError, match="permission denied"),
            tenant_context(world.acme.id),
            connection.cursor() as cursor,
        ):
            cursor.execute(change + " WHERE id = %s", [row.id])
    with pytest.raises(ProgrammingError, match="permission denied"):
        support_sql(
            "INSERT INTO messaging_breakglassgrant (tenant_id, staff_user_id, staff_username,"
            " reason, granted_at, expires_at) VALUES (%s, %s, 'sam', 'let me in please', now(),"
            " now() + interval '1 hour')",
            [str(world.acme.id), staff.pk],
            user_id=staff.pk,
        )


def test_a_grant_a_read_and_an_early_end_are_audited_and_told_to_the_tenant(two_tenants_messages):
    world, acme_message, globex_message = two_tenants_messages
    staff = staff_member()
    with pytest.raises(breakglass.NoActiveGrant):
        breakglass.read_message_content(
            tenant_id=world.acme.id, message_id=acme_message, staff=staff
        )
    with pytest.raises(breakglass.BreakGlassError, match="reason"):
        breakglass.grant_break_glass(
            tenant_id=world.acme.id, staff=staff, reason="  ", duration=timedelta(hours=1)
        )
    opened = breakglass.grant_break_glass(
        tenant_id=world.acme.id,
        staff=staff,
        reason="INC-7: DIP rejects acme's IF-021",
        duration=timedelta(hours=1),
    )
    content = breakglass.read_message_content(
        tenant_id=world.acme.id, message_id=acme_message, staff=staff
    )
    assert (content.mpan, content.payload, content.grant_id) == (
        "1200023305967",
        PAYLOAD,
        opened.id,
    )
    with pytest.raises(breakglass.NoActiveGrant):  # acme's grant does not open globex
        breakglass.read_message_content(
            tenant_id=world.globex.id, message_id=globex_message, staff=staff
        )
    breakglass.end_break_glass(
        tenant_id=world.acme.id, grant_id=opened.id, ended_by="support:sam", actor_user_id=staff.pk
    )
    with pytest.raises(breakglass.NoActiveGrant):
        breakglass.read_message_content(
            tenant_id=world.acme.id, message_id=acme_message, staff=staff
        )
    with tenant_context(world.acme.id):
        actions = list(
            AuditEvent.objects.filter(action__startswith="support.")
            .order_by("occurred_at")
            .values_list("action", "object_id")
        )
        assert actions == [
            (breakglass.GRANTED, str(opened.id)),
            (breakglass.READ, str(acme_message)),
            (breakglass.ENDED, str(opened.id)),
        ]
        notice = Notification.objects.get(object_type="break_glass_grant")
        assert notice.role == "tenant_admin"
        assert "INC-7" in notice.body
    with tenant_context(world.globex.id):
        assert not AuditEvent.objects.filter(action__startswith="support.").exists()
