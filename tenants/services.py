"""Writes of tenant data: onboarding, identities, connections, channels, API credentials.

Each service is keyword-only and atomic, runs inside the caller's tenant context (except
``create_tenant``, which makes its own), and records what it did in the audit log.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import crypto
from core.audit import record_event
from core.models import TemporaryPassword
from core.tenancy import current_tenant_id, tenant_context
from tenants.models import (
    ApiCredential,
    ApiScope,
    Channel,
    ChannelStatus,
    Connection,
    DipIdentity,
    Direction,
    Environment,
    Invitation,
    InvitationStatus,
    Membership,
    Role,
    Tenant,
)
from tenants.selectors import dip_id_registered
from tenants.tasks import send_invitation_email_task

API_KEY_PREFIX = "bb"


def _validated(instance: object, *, exclude: list[str] | None = None) -> None:
    instance.full_clean(exclude=exclude)  # type: ignore[attr-defined]


@transaction.atomic
def create_tenant(
    *, slug: str, name: str, tenant_id: uuid.UUID | None = None, actor: str = "system"
) -> Tenant:
    """Create a tenant (with a given id, or a new one); raises ValidationError on bad input."""
    tenant = Tenant(id=tenant_id or uuid.uuid4(), slug=slug, name=name)
    # validate_unique cannot see other tenants' rows under RLS: the database's constraint decides.
    tenant.clean_fields()
    with tenant_context(tenant.id):
        try:
            with transaction.atomic():
                tenant.save(force_insert=True)
        except IntegrityError as exc:
            raise ValidationError({"slug": f"a tenant with slug {slug!r} already exists"}) from exc
        record_event(
            action="tenant.created", actor=actor, object_type="tenant", object_id=tenant.id
        )
    return tenant


def _keep_an_admin(*, losing: User) -> None:
    """Refuse a change that would leave the current tenant with no tenant admin."""
    others = Membership.objects.filter(
        tenant_id=current_tenant_id(), roles__contains=[Role.TENANT_ADMIN]
    ).exclude(user=losing)
    if not others.exists():
        raise ValidationError("a tenant keeps at least one tenant admin: appoint another first")


@transaction.atomic
def add_member(*, user: User, roles: list[str], actor: str = "system") -> Membership:
    """Give ``user`` these roles in the current tenant (replacing any roles they had)."""
    _check_roles(roles)
    current = Membership.objects.filter(tenant_id=current_tenant_id(), user=user).first()
    if current and Role.TENANT_ADMIN in current.roles and Role.TENANT_ADMIN not in roles:
        _keep_an_admin(losing=user)
    # Name the tenant: inside a request the user context also shows the acting user's
    # memberships of other tenants, which must never be the row updated here.
    membership, _ = Membership.objects.update_or_create(
        tenant_id=current_tenant_id(), user=user, defaults={"roles": sorted(roles)}
    )
    record_event(
        action="membership.roles_set",
        actor=actor,
        object_type="user",
        object_id=user.pk,
        detail={"username": user.get_username(), "roles": sorted(roles)},
    )
    return membership


@transaction.atomic
def create_user(
    *,
    username: str,
    email: str,
    password: str,
    roles: list[str],
    actor: str = "system",
    temporary_password: bool = False,
) -> User:
    """Create a user (password checked against the configured rules) and add them to the tenant.

    With ``temporary_password`` (someone other than the person chose it, as in onboarding) the
    first sign-in can do nothing but change it."""
    user_model = get_user_model()
    user = user_model(username=username, email=email)
    validate_password(password, user)
    user.set_password(password)
    _validated(user, exclude=["password"])
    user.save()
    if temporary_password:
        TemporaryPassword.objects.create(user=user, issued_by=actor)
    add_member(user=user, roles=roles, actor=actor)
    return user


INVITATION_LIFETIME = timedelta(days=14)


def _check_roles(roles: list[str]) -> None:
    unknown = sorted(set(roles) - set(Role.values))
    if unknown:
        raise ValidationError({"roles": f"unknown role(s): {', '.join(unknown)}"})
    if not roles:
        raise ValidationError({"roles": "choose at least one role"})


@transaction.atomic
def invite_member(*, username: str, email: str, roles: list[str], actor: str) -> Invitation:
    """Invite a person to the current tenant with these roles; they join only by accepting.

    An existing account is invited as it is (its email address is not changed). A name nobody
    holds becomes a new account with no usable password, whose owner sets one through the link
    the invitation email carries. Either way the caller learns the same thing, so the answer
    cannot tell a tenant admin which usernames exist in other tenants. Raises ValidationError
    for bad roles, a bad new username or email, or a person already in this tenant.
    """
    _check_roles(roles)
    EmailValidator()(email)
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model(username=username, email=email)
        user.set_unusable_password()
        _validated(user, exclude=["password"])
        user.save()
    tenant_id = current_tenant_id()
    if Membership.objects.filter(tenant_id=tenant_id, user=user).exists():
        raise ValidationError(
            {"username": f"{username} is already a member here: change their roles in the list"}
        )
    tenant = Tenant.objects.get(id=tenant_id)
    # A second invitation replaces the pending one (new roles, new expiry).
    Invitation.objects.filter(
        tenant_id=tenant_id, user=user, status=InvitationStatus.PENDING
    ).delete()
    invitation = Invitation.objects.create(
        user=user,
        roles=sorted(roles),
        tenant_name=tenant.name,
        invited_by=actor,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    record_event(
        action="membership.invited",
        actor=actor,
        object_type="user",
        object_id=user.pk,
        detail={"username": username, "roles": sorted(roles)},
    )
    send_invitation_email_task.delay_on_commit(str(tenant_id), invitation.id)
    return invitation


def _pending_invitation(*, user: User, invitation_id: int) -> Invitation:
    """The user's own pending, unexpired invitation (read through the invitee policy)."""
    invitation = Invitation.objects.filter(
        id=invitation_id,
        user=user,
        status=InvitationStatus.PENDING,
        expires_at__gt=timezone.now(),
    ).first()
    if invitation is None:
        raise ValidationError("no such invitation, or it has expired or been answered")
    return invitation


@transaction.atomic
def accept_invitation(*, user: User, invitation_id: int) -> Membership:
    """Join the inviting tenant with the invited roles. Needs the user context (the invitee's
    read policy); the membership is written inside the inviting tenant's own context."""
    invitation = _pending_invitation(user=user, invitation_id=invitation_id)
    with tenant_context(str(invitation.tenant_id)):
        membership = add_member(user=user, roles=list(invitation.roles), actor=user.get_username())
        invitation.status = InvitationStatus.ACCEPTED
        invitation.answered_at = timezone.now()
        invitation.save(update_fields=["status", "answered_at"])
        record_event(
            action="membership.invitation_accepted",
            actor=user.get_username(),
            actor_user_id=user.pk,
            object_type="user",
            object_id=user.pk,
            detail={"roles": list(invitation.roles), "invited_by": invitation.invited_by},
        )
    return membership


@transaction.atomic
def decline_invitation(*, user: User, invitation_id: int) -> None:
    invitation = _pending_invitation(user=user, invitation_id=invitation_id)
    with tenant_context(str(invitation.tenant_id)):
        invitation.status = InvitationStatus.DECLINED
        invitation.answered_at = timezone.now()
        invitation.save(update_fields=["status", "answered_at"])
        record_event(
            action="membership.invitation_declined",
            actor=user.get_username(),
            actor_user_id=user.pk,
            object_type="user",
            object_id=user.pk,
        )


@transaction.atomic
def set_second_factor_policy(*, tenant: Tenant, required: bool, actor: str) -> Tenant:
    """Require (or stop requiring) an authenticator app of everyone acting for the tenant."""
    tenant.require_second_factor = required
    tenant.save(update_fields=["require_second_factor"])
    record_event(
        action="tenant.second_factor_policy",
        actor=actor,
        category="security",
        object_type="tenant",
        object_id=tenant.id,
        detail={"required": required},
    )
    return tenant


@transaction.atomic
def remove_member(*, membership: Membership, actor: str) -> None:
    """Take a user out of the current tenant (their account and other tenants stay)."""
    if Role.TENANT_ADMIN in membership.roles:
        _keep_an_admin(losing=membership.user)
    username = membership.user.get_username()
    membership.delete()
    record_event(
        action="membership.removed",
        actor=actor,
        object_type="user",
        object_id=membership.user_id,
        detail={"username": username},
    )


@transaction.atomic
def create_identity(
    *, mpid: str, role_code: str, dip_id: str, actor: str = "system"
) -> DipIdentity:
    identity = DipIdentity(mpid=mpid, role_code=role_code, dip_id=dip_id.upper())
    _validated(identity, exclude=["tenant"])
    _unique(DipIdentity, "identity", mpid=mpid, role_code=role_code)
    if dip_id_registered(dip_id=identity.dip_id):
        raise ValidationError({"dip_id": f"DIP ID {identity.dip_id} is already registered"})
    identity.save()
    record_event(
        action="identity.created",
        actor=actor,
        object_type="identity",
        object_id=identity.pk,
        detail={"mpid": mpid, "role_code": role_code, "dip_id": dip_id},
    )
    return identity


def _unique(model: type, noun: str, **fields: object) -> None:
    """Name a duplicate clearly instead of letting the database raise IntegrityError."""
    if model.objects.filter(**fields).exists():  # type: ignore[attr-defined]
        described = ", ".join(f"{k}={v}" for k, v in fields.items())
        raise ValidationError(f"this tenant already has a {noun} with {described}")


def api_key_context(tenant_id: uuid.UUID | None) -> str:
    """Associated data binding an encrypted DIP API key to its tenant and column."""
    if tenant_id is None:
        raise ValueError("an API key belongs to a tenant")
    return f"tenant:{tenant_id}:connection.api_key"


@transaction.atomic
def create_connection(
    *,
    identity: DipIdentity,
    environment: str,
    dip_base_url: str,
    dcp_id: str = "",
    api_key: str = "",
    actor: str = "system",
) -> Connection:
    """Connect an identity to a DIP environment; the DIP API key is stored encrypted."""
    connection = Connection(
        identity=identity, environment=environment, dip_base_url=dip_base_url, dcp_id=dcp_id
    )
    _validated(connection, exclude=["tenant"])
    _unique(Connection, "connection", identity=identity, environment=environment)
    if api_key:
        connection.api_key_encrypted = crypto.encrypt(
            api_key.encode(), context=api_key_context(current_tenant_id())
        )
        connection.api_key_hint = api_key[-4:]
        connection.api_key_changed_at = timezone.now()
    connection.save()
    record_event(
        action="connection.created",
        actor=actor,
        object_type="connection",
        object_id=connection.pk,
        detail={
            "identity": str(identity),
            "environment": environment,
            "dip_base_url": dip_base_url,
        },
    )
    return connection


@transaction.atomic
def update_connection(
    *,
    connection: Connection,
    dip_base_url: str | None = None,
    api_key: str | None = None,
    actor: str,
) -> Connection:
    """Point a connection at another DIP address and/or replace its DIP API key (stored encrypted,
    never shown again)."""
    changed: dict[str, object] = {}
    if dip_base_url is not None and dip_base_url != connection.dip_base_url:
        connection.dip_base_url = dip_base_url
        connection.full_clean(exclude=["tenant", "identity"])
        changed["dip_base_url"] = dip_base_url
    if api_key:
        connection.api_key_encrypted = crypto.encrypt(
            api_key.encode(), context=api_key_context(connection.tenant_id)
        )
        connection.api_key_hint = api_key[-4:]
        connection.api_key_changed_at = timezone.now()
        changed["api_key"] = f"replaced (ends {connection.api_key_hint})"
    if changed:
        connection.save()
        record_event(
            action="connection.updated",
            actor=actor,
            object_type="connection",
            object_id=connection.pk,
            detail=changed,
        )
    return connection


def get_connection_api_key(*, connection: Connection) -> str:
    """Decrypt a connection's DIP API key for the worker that calls the DIP; never for display."""
    if not connection.api_key_encrypted:
        return ""
    return crypto.decrypt(
        connection.api_key_encrypted, context=api_key_context(connection.tenant_id)
    ).decode()


@transaction.atomic
def create_channel(
    *,
    connection: Connection,
    interface_id: str,
    direction: str,
    status: str = ChannelStatus.TEST,
    expected_cadence: timedelta | None = None,
    actor: str = "system",
) -> Channel:
    channel = Channel(
        connection=connection,
        interface_id=interface_id,
        direction=direction,
        status=status,
        expected_cadence=expected_cadence,
    )
    _validated(channel, exclude=["tenant"])
    _unique(
        Channel, "channel", connection=connection, interface_id=interface_id, direction=direction
    )
    channel.save()
    record_event(
        action="channel.created",
        actor=actor,
        object_type="channel",
        object_id=channel.pk,
        detail={"interface_id": interface_id, "direction": direction, "status": status},
    )
    return channel


@dataclass(frozen=True)
class IssuedApiKey:
    credential: ApiCredential
    key: str  # shown once to whoever created it, then gone


def hash_api_secret(secret: str) -> str:
    # The secret is 32 random bytes, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def issue_api_credential(
    *,
    name: str,
    scopes: list[str],
    environment: str,
    created_by: User | None = None,
    actor: str = "system",
) -> IssuedApiKey:
    """Issue an API key for a client system: ``bb_<prefix>_<secret>``, returned once."""
    unknown = sorted(set(scopes) - set(ApiScope.values))
    if unknown or not scopes:
        raise ValidationError({"scopes": f"choose scopes from {', '.join(ApiScope.values)}"})
    if environment not in Environment.values:
        raise ValidationError({"environment": f"unknown environment {environment!r}"})
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    credential = ApiCredential.objects.create(
        name=name,
        prefix=prefix,
        secret_hash=hash_api_secret(secret),
        scopes=sorted(scopes),
        environment=environment,
        created_by=created_by,
    )
    record_event(
        action="api_credential.issued",
        actor=actor,
        object_type="api_credential",
        object_id=credential.pk,
        detail={"name": name, "prefix": prefix, "scopes": sorted(scopes)},
    )
    return IssuedApiKey(credential=credential, key=f"{API_KEY_PREFIX}_{prefix}_{secret}")


@transaction.atomic
def revoke_api_credential(*, credential: ApiCredential, actor: str) -> ApiCredential:
    credential.revoked_at = timezone.now()
    credential.save(update_fields=["revoked_at"])
    record_event(
        action="api_credential.revoked",
        actor=actor,
        object_type="api_credential",
        object_id=credential.pk,
        detail={"prefix": credential.prefix},
    )
    return credential


@transaction.atomic
def onboard_tenant(
    *,
    slug: str,
    name: str,
    mpid: str,
    role_code: str,
    dip_id: str,
    environment: str,
    dip_base_url: str,
    dcp_id: str = "",
    admin_username: str,
    admin_email: str,
    admin_password: str,
    actor: str,
) -> Tenant:
    """A provider admin's onboarding: the tenant, its first identity and connection, and its first
    tenant admin, all or nothing. Raises ValidationError naming every problem it finds first."""
    tenant = create_tenant(slug=slug, name=name, actor=actor)
    with tenant_context(tenant.id):
        identity = create_identity(mpid=mpid, role_code=role_code, dip_id=dip_id, actor=actor)
        create_connection(
            identity=identity,
            environment=environment,
            dip_base_url=dip_base_url,
            dcp_id=dcp_id,
            actor=actor,
        )
        create_user(
            username=admin_username,
            email=admin_email,
            password=admin_password,
            roles=[Role.TENANT_ADMIN],
            actor=actor,
            temporary_password=True,
        )
    return tenant


__all__ = [
    "Direction",
    "IssuedApiKey",
    "accept_invitation",
    "add_member",
    "create_channel",
    "create_connection",
    "create_identity",
    "create_tenant",
    "create_user",
    "decline_invitation",
    "get_connection_api_key",
    "invite_member",
    "issue_api_credential",
    "onboard_tenant",
    "remove_member",
    "revoke_api_credential",
    "set_second_factor_policy",
    "update_connection",
]
