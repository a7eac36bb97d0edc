"""Second-factor enrolment under a tenant's requirement, and the recovery codes made with it.

A tenant that requires a second factor must not let whoever holds a member's password set one up
(the real person would then be locked out by the thief's app). Enrolment there needs a one-time
link that a tenant admin has sent to the member's email address: the password alone does not give
it. Only the link token's hash is stored; it expires, and works once, for one person.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from core.audit import record_event
from core.models import RecoveryCodes, hash_recovery_code
from core.tenancy import current_tenant_id, tenant_context
from tenants import notify
from tenants.models import EnrolmentLink, Membership, Tenant

RECOVERY_CODE_COUNT = 10


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def issue_enrolment_link(*, user_id: int, issued_by: str) -> bool:
    """Make a one-time enrolment link for a member of the current tenant and email it to them
    (after commit). Earlier unused links of theirs stop working. False when they are no member."""
    tenant_id = current_tenant_id()
    membership = (
        Membership.objects.select_related("user")
        .filter(tenant_id=tenant_id, user_id=user_id)
        .first()
    )
    if membership is None:
        return False
    now = timezone.now()
    hours = settings.BUSBAR_ENROLMENT_LINK_HOURS
    EnrolmentLink.objects.filter(
        tenant_id=tenant_id, user_id=user_id, used_at__isnull=True, expires_at__gt=now
    ).update(expires_at=now)
    token = secrets.token_urlsafe(32)
    EnrolmentLink.objects.create(
        user_id=user_id,
        token_hash=hash_token(token),
        issued_by=issued_by,
        expires_at=now + timedelta(hours=hours),
    )
    record_event(
        action="mfa.enrolment_link_issued",
        actor=issued_by,
        category="security",
        object_type="user",
        object_id=user_id,
        detail={"username": membership.user.get_username(), "expires_in_hours": hours},
    )
    path = reverse("console:mfa-enrol", kwargs={"tenant_id": tenant_id, "token": token})
    tenant_name = Tenant.objects.get(id=tenant_id).name
    user = membership.user
    transaction.on_commit(
        lambda: notify.send_enrolment_link(
            user, tenant_name=tenant_name, link=notify.absolute(path), expires_hours=hours
        )
    )
    return True


def find_enrolment_link(*, tenant_id: UUID | str, user: User, token: str) -> int | None:
    """The id of this user's unused, unexpired link in that tenant with this token, or None."""
    with tenant_context(tenant_id):
        link = EnrolmentLink.objects.filter(
            token_hash=hash_token(token),
            user=user,
            used_at__isnull=True,
            expires_at__gt=timezone.now(),
        ).first()
    return link.id if link else None


@transaction.atomic
def use_enrolment_link(*, tenant_id: UUID | str, link_id: int, user: User) -> bool:
    """Spend the link (once): False if it was already used or has expired meanwhile."""
    with tenant_context(tenant_id):
        used = EnrolmentLink.objects.filter(
            id=link_id, user=user, used_at__isnull=True, expires_at__gt=timezone.now()
        ).update(used_at=timezone.now())
        if used:
            record_event(
                action="mfa.enrolment_link_used",
                actor=user.get_username(),
                actor_user_id=user.pk,
                category="security",
                object_type="user",
                object_id=user.pk,
            )
    return bool(used)


def new_recovery_code() -> str:
    """80 random bits as 16 base32 characters, grouped by four for reading aloud."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


@transaction.atomic
def make_recovery_codes(*, user: User) -> list[str]:
    """Replace the user's recovery codes with fresh ones and return them (to show once)."""
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCodes.objects.filter(user=user).delete()
    RecoveryCodes.objects.create(
        user=user,
        name="Recovery codes",
        confirmed=True,
        code_hashes=[hash_recovery_code(code) for code in codes],
    )
    return codes
