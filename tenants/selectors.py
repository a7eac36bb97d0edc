"""Reads of tenant data. Every query runs under RLS; these add the per-user access checks."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.http import Http404
from django.utils import timezone

from core.tenancy import current_environment, current_tenant_id
from tenants.models import (
    ApiCredential,
    Certificate,
    Channel,
    Connection,
    DipIdentity,
    Invitation,
    InvitationStatus,
    Membership,
    Notification,
    Role,
)

SESSION_TENANT_KEY = "busbar_tenant_id"
# The tenant this session has been recorded as acting for (its sign-in shows in that tenant).
SESSION_ACTED_FOR_KEY = "busbar_acted_for"
# Set at sign-in when someone else chose the account's password: nothing else until it changes.
SESSION_PASSWORD_CHANGE_KEY = "busbar_password_change_required"


def in_environment[Q: models.QuerySet](queryset: Q, path: str) -> Q:
    """``queryset`` narrowed to the current environment (an API key's) through the
    ``path`` to a connection's environment; unchanged outside an environment context."""
    environment = current_environment()
    # An empty environment matches nothing, so a context entered without one fails closed.
    return queryset if environment is None else queryset.filter(**{path: environment})


def list_memberships_for_user(*, user: User) -> list[Membership]:
    """The user's memberships in every tenant (readable through the ``app.user_id`` policy)."""
    return list(
        Membership.objects.filter(user=user, tenant__is_active=True)
        .select_related("tenant")
        .order_by("tenant__name")
    )


def user_has_role(membership: Membership | None, *roles: Role | str) -> bool:
    return membership is not None and any(role in membership.roles for role in roles)


def list_identities() -> list[DipIdentity]:
    identities = DipIdentity.objects.all()
    if current_environment() is not None:
        identities = in_environment(identities, "connections__environment").distinct()
    return list(identities.order_by("mpid", "role_code"))


def list_connections() -> list[Connection]:
    return list(
        in_environment(Connection.objects.select_related("identity"), "environment").order_by(
            "identity__mpid", "environment"
        )
    )


def list_channels(*, connection_id: int | None = None) -> list[Channel]:
    channels = in_environment(
        Channel.objects.select_related("connection__identity"), "connection__environment"
    )
    if connection_id is not None:
        channels = channels.filter(connection_id=connection_id)
    return list(channels.order_by("connection_id", "interface_id", "direction"))


def get_channel(*, channel_id: int) -> Channel:
    """The channel in the current tenant; another tenant's channel and a missing one are both 404."""
    try:
        return in_environment(
            Channel.objects.select_related("connection__identity"), "connection__environment"
        ).get(id=channel_id)
    except Channel.DoesNotExist as exc:
        raise Http404("No such channel") from exc


def list_certificates() -> list[Certificate]:
    """The tenant's certificates, newest first within each connection and purpose."""
    return list(
        in_environment(
            Certificate.objects.select_related("connection__identity", "owner"),
            "connection__environment",
        ).order_by("connection_id", "purpose", "-created_at")
    )


def get_certificate(*, certificate_id: UUID | str) -> Certificate:
    """One certificate of the current tenant; another tenant's and a missing one are both 404."""
    try:
        return in_environment(
            Certificate.objects.select_related("connection__identity"), "connection__environment"
        ).get(id=certificate_id)
    except (Certificate.DoesNotExist, ValueError, ValidationError) as exc:
        raise Http404("No such certificate") from exc


def get_connection(*, connection_id: int | str) -> Connection:
    try:
        return in_environment(Connection.objects.select_related("identity"), "environment").get(
            id=connection_id
        )
    except (Connection.DoesNotExist, ValueError) as exc:
        raise Http404("No such connection") from exc


def list_notifications(*, membership: Membership | None, limit: int = 20) -> list[Notification]:
    """Recent notifications addressed to any of the member's roles whose condition is still
    open (a cleared quiet channel or a closed circuit no longer needs attention)."""
    if membership is None:
        return []
    return list(
        Notification.objects.filter(role__in=membership.roles, resolved_at__isnull=True).order_by(
            "-created_at"
        )[:limit]
    )


def list_members() -> list[Membership]:
    """The current tenant's members (only its own rows, even inside a user context)."""
    return list(
        Membership.objects.filter(tenant_id=current_tenant_id())
        .select_related("user")
        .order_by("user__username")
    )


def get_member(*, membership_id: int | str) -> Membership:
    try:
        return Membership.objects.select_related("user").get(
            id=membership_id, tenant_id=current_tenant_id()
        )
    except (Membership.DoesNotExist, ValueError) as exc:
        raise Http404("No such member") from exc


def get_api_credential(*, credential_id: int | str) -> ApiCredential:
    try:
        return ApiCredential.objects.get(id=credential_id)
    except (ApiCredential.DoesNotExist, ValueError) as exc:
        raise Http404("No such API key") from exc


def list_api_credentials() -> list[ApiCredential]:
    return list(ApiCredential.objects.order_by("-created_at"))


def find_api_credential(*, prefix: str) -> tuple[str, int, str, list[str], bool] | None:
    """Look an API key's prefix up before any tenant is known.

    Runs the ``busbar_find_api_credential`` SECURITY DEFINER function, which returns only the
    matching row's tenant, id, hash, scopes and revoked flag: the runtime role cannot list keys.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tenant_id, id, secret_hash, scopes, revoked FROM busbar_find_api_credential(%s)",
            [prefix],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return str(row[0]), row[1], row[2], list(row[3]), row[4]


def list_active_tenant_ids() -> list[str]:
    """Every active tenant's id (and nothing else about them), for maintenance fan-outs."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT busbar_active_tenant_ids()")
        return [str(row[0]) for row in cursor.fetchall()]


def dip_id_registered(*, dip_id: str) -> bool:
    """Whether any tenant (this one or another) already holds this DIP ID."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT busbar_dip_id_registered(%s)", [dip_id])
        return bool(cursor.fetchone()[0])


def resolve_webhook_token(*, token: str) -> tuple[str, int] | None:
    """The (tenant id, channel id) that owns an inbound webhook token, or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id, channel_id FROM busbar_resolve_webhook(%s)", [token])
        row = cursor.fetchone()
    return (str(row[0]), row[1]) if row else None


def list_invitations_for_user(*, user: User) -> list[Invitation]:
    """The user's own pending, unexpired invitations (the invitee read policy, under the user
    context), oldest first."""
    return list(
        Invitation.objects.filter(
            user=user, status=InvitationStatus.PENDING, expires_at__gt=timezone.now()
        ).order_by("created_at")
    )


def list_pending_invitations() -> list[Invitation]:
    """The current tenant's invitations still waiting for an answer."""
    return list(
        Invitation.objects.filter(
            tenant_id=current_tenant_id(),
            status=InvitationStatus.PENDING,
            expires_at__gt=timezone.now(),
        )
        .select_related("user")
        .order_by("created_at")
    )


def tenant_requires_second_factor_for(*, memberships: list[Membership]) -> bool:
    """Whether any tenant the person belongs to requires a second factor."""
    return any(m.tenant.require_second_factor for m in memberships)
