"""Background entry points for tenant housekeeping and account emails: ids in, one service each."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model

from core.tenancy import tenant_task
from tenants import certificates, enrolment, notices, notify
from tenants.models import Invitation, InvitationStatus
from tenants.selectors import list_active_tenant_ids


@shared_task
def certificate_maintenance_task() -> int:
    """Beat's hourly fan-out: one task per active tenant, so one tenant's failure stops no other."""
    tenant_ids = list_active_tenant_ids()
    for tenant_id in tenant_ids:
        certificate_maintenance_for_tenant_task.delay(str(tenant_id))
    return len(tenant_ids)


@shared_task
@tenant_task
def certificate_maintenance_for_tenant_task(tenant_id: str) -> dict[str, int]:
    """End finished overlap windows and send the expiry warnings that are due (idempotent)."""
    retired = certificates.retire_overlapped_certificates()
    warned = len(certificates.check_certificate_expiry())
    return {"retired": retired, "warned": warned}


@shared_task
@tenant_task
def send_invitation_email_task(tenant_id: str, invitation_id: int) -> bool:
    """Email the invitee (at their own registered address) about a still-pending invitation."""
    invitation = (
        Invitation.objects.select_related("user")
        .filter(id=invitation_id, status=InvitationStatus.PENDING)
        .first()
    )
    return invitation is not None and notify.send_invitation(invitation)


@shared_task
@tenant_task
def send_enrolment_link_task(tenant_id: str, user_id: int, issued_by: str) -> bool:
    """Make a one-time second-factor enrolment link for a member and email it to them.

    The token is made here, in the worker, so it exists only in the email and as a hash."""
    return enrolment.issue_enrolment_link(user_id=user_id, issued_by=issued_by)


@shared_task
def send_account_change_email_task(user_id: int, action: str, source_address: str | None) -> bool:
    """Tell a person about a security change to their account (second factor, recovery codes)."""
    user = get_user_model().objects.filter(pk=user_id).first()
    return user is not None and notify.send_account_change(
        user, action=action, source_address=source_address
    )


@shared_task
@tenant_task
def send_notice_email_task(tenant_id: str, notification_ids: list[int], roles: list[str]) -> int:
    """Email a notice raised in a web request (the request itself never sends mail)."""
    return notices.send_notice_email(notification_ids=notification_ids, roles=roles)
