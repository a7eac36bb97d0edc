"""Break-glass: provider support's recorded, expiring permission to read one tenant's message
content (MPANs and payloads).

A grant names the tenant, the staff member, the reason and the expiry. Writing it, every read under
it and ending it are audit events in the tenant's own log (sealed in its evidence ledger like every
other audit event), and the tenant's admins get a notice when one is opened. The content itself is
read through the support role's ``support_message_content`` view, which the database confines to
tenants holding an active grant for the session's ``app.user_id`` (messaging migration 0012): a
bug here cannot show content without a grant row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.contrib.auth.models import User
from django.db import connections, transaction
from django.utils import timezone

from core.audit import record_event
from core.tenancy import tenant_context, user_context
from messaging.models import BreakGlassGrant
from messaging.store.services import decompress
from tenants.models import Notification, Role

MAX_DURATION = timedelta(hours=8)
MIN_REASON_LENGTH = 10

GRANTED = "support.break_glass_granted"
READ = "support.break_glass_read"
ENDED = "support.break_glass_ended"
ACTIONS = (GRANTED, READ, ENDED)


class BreakGlassError(ValueError):
    """A grant request that cannot be honoured (the message says what to change)."""


class NoActiveGrant(PermissionError):
    """Content was asked for without an active grant for that tenant (the database said so)."""


@dataclass(frozen=True)
class MessageContent:
    message_id: int
    mpan: str
    payload: bytes | None  # None: removed at the end of retention, or not stored yet
    grant_id: int


def _actor(staff: User) -> str:
    return f"support:{staff.get_username()}"


@transaction.atomic
def grant_break_glass(
    *,
    tenant_id: UUID,
    staff: User,
    reason: str,
    duration: timedelta,
    source_address: str | None = None,
) -> BreakGlassGrant:
    """Record a grant for ``staff`` to read ``tenant_id``'s content for ``duration``, audit it and
    tell the tenant's admins. Raises BreakGlassError for a missing reason or a bad duration."""
    reason = reason.strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise BreakGlassError(
            f"Give a reason of at least {MIN_REASON_LENGTH} characters (an incident or ticket"
            " reference and why content is needed): the tenant reads it."
        )
    if not timedelta(minutes=1) <= duration <= MAX_DURATION:
        raise BreakGlassError(
            f"A grant lasts between 1 minute and {int(MAX_DURATION.total_seconds() // 3600)} hours."
        )
    now = timezone.now()
    with tenant_context(tenant_id):
        grant = BreakGlassGrant.objects.create(
            staff_user=staff,
            staff_username=staff.get_username(),
            reason=reason,
            granted_at=now,
            expires_at=now + duration,
        )
        record_event(
            action=GRANTED,
            actor=_actor(staff),
            actor_user_id=staff.pk,
            object_type="break_glass_grant",
            object_id=grant.id,
            source_address=source_address,
            detail={
                "grant": grant.id,
                "staff": staff.get_username(),
                "reason": reason,
                "granted_at": now.isoformat(),
                "expires_at": grant.expires_at.isoformat(),
            },
        )
        Notification.objects.create(
            role=Role.TENANT_ADMIN,
            level="warning",
            title=f"Provider support ({staff.get_username()}) may read your message content"
            f" until {grant.expires_at:%Y-%m-%d %H:%M} UTC",
            body=f"Break-glass reason: {reason}. Every read is in your Activity log.",
            object_type="break_glass_grant",
            object_id=str(grant.id),
        )
    return grant


@transaction.atomic
def end_break_glass(
    *,
    tenant_id: UUID,
    grant_id: int,
    ended_by: str,
    actor_user_id: int | None,
    source_address: str | None = None,
) -> BreakGlassGrant:
    """End an active grant now. Raises BreakGlassGrant.DoesNotExist when there is no such grant
    of this tenant, BreakGlassError when it has already ended or expired."""
    now = timezone.now()
    with tenant_context(tenant_id):
        grant = BreakGlassGrant.objects.get(id=grant_id)
        ended = BreakGlassGrant.objects.filter(
            id=grant_id, ended_at__isnull=True, expires_at__gt=now
        ).update(ended_at=now, ended_by=ended_by[:200])
        if not ended:
            raise BreakGlassError("That grant has already ended or expired.")
        record_event(
            action=ENDED,
            actor=ended_by,
            actor_user_id=actor_user_id,
            object_type="break_glass_grant",
            object_id=grant.id,
            source_address=source_address,
            detail={"grant": grant.id, "staff": grant.staff_username, "ended_at": now.isoformat()},
        )
        grant.refresh_from_db()
    return grant


def list_grants(*, tenant_id: UUID, active_at: datetime | None = None) -> list[BreakGlassGrant]:
    """The tenant's latest grants, newest first; with ``active_at``, only those active then."""
    with tenant_context(tenant_id):
        grants = BreakGlassGrant.objects.order_by("-granted_at")
        if active_at is not None:
            grants = grants.filter(
                ended_at__isnull=True, granted_at__lte=active_at, expires_at__gt=active_at
            )
        return list(grants[:50])


def active_grant(*, tenant_id: UUID, staff_user_id: int) -> BreakGlassGrant | None:
    now = timezone.now()
    with tenant_context(tenant_id):
        return (
            BreakGlassGrant.objects.filter(
                staff_user_id=staff_user_id,
                ended_at__isnull=True,
                granted_at__lte=now,
                expires_at__gt=now,
            )
            .order_by("-expires_at")
            .first()
        )


def read_message_content(
    *, tenant_id: UUID, message_id: int, staff: User, source_address: str | None = None
) -> MessageContent:
    """The message's MPAN and exact bytes, read as the support role under ``staff``'s grant, and
    the read recorded in the tenant's audit log. Raises NoActiveGrant when the database returns
    nothing: no active grant for that tenant (or no such message of that tenant)."""
    with (
        user_context(staff.pk, using="support"),
        connections["support"].cursor() as cursor,
    ):
        cursor.execute(
            "SELECT mpan, raw_offset, raw_length, body_zstd FROM support_message_content"
            " WHERE tenant_id = %s AND id = %s",
            [str(tenant_id), message_id],
        )
        row = cursor.fetchone()
        cursor.execute(
            "SELECT id, reason FROM messaging_breakglassgrant WHERE tenant_id = %s"
            " AND staff_user_id = %s AND ended_at IS NULL AND granted_at <= now()"
            " AND expires_at > now() ORDER BY expires_at DESC LIMIT 1",
            [str(tenant_id), staff.pk],
        )
        grant = cursor.fetchone()
    if row is None or grant is None:
        raise NoActiveGrant("no active break-glass grant for this tenant, or no such message")
    mpan, offset, length, body = row
    payload = None
    if body is not None and offset is not None and length is not None:
        payload = decompress(bytes(body))[offset : offset + length]
    with tenant_context(tenant_id):
        record_event(
            action=READ,
            actor=_actor(staff),
            actor_user_id=staff.pk,
            object_type="message",
            object_id=message_id,
            source_address=source_address,
            detail={"grant": grant[0], "reason": grant[1], "message": message_id},
        )
    return MessageContent(message_id=message_id, mpan=mpan, payload=payload, grant_id=grant[0])
