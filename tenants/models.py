"""Tenants and everything a tenant owns to reach the DIP: identities, connections, channels, keys.

Every tenant-owned table has ``tenant_id`` leading its keys and is under RLS (see the migrations);
the tenant column defaults to the current tenant context, so a write outside one fails loudly.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from core.tenancy import current_tenant_id


class Environment(models.TextChoices):
    """DIP environments (S1.environmentTag, DT-013). Onboarding runs in UIT, then PRD."""

    DEV = "DEV", "Development"
    UIT = "UIT", "User integration testing"
    SIT = "SIT", "System integration testing"
    SITB = "SITB", "System integration testing B"
    PRD = "PRD", "Production"


class Role(models.TextChoices):
    """Roles within a tenant, split as the DIP splits user, certificate and message admins."""

    TENANT_ADMIN = "tenant_admin", "Tenant admin"
    CERTIFICATE_ADMIN = "certificate_admin", "Certificate admin"
    MESSAGE_OPERATOR = "message_operator", "Message operator"
    APPROVER = "approver", "Approver"
    VIEWER = "viewer", "Viewer"
    AUDITOR = "auditor", "Auditor"


class StaffRole(models.TextChoices):
    """Busbar's own people; held as Django groups of these names, not as tenant memberships."""

    PROVIDER_SUPPORT = "provider_support", "Provider support"
    PROVIDER_ADMIN = "provider_admin", "Provider admin"


class Tenant(models.Model):
    """A licensed market participant served by Busbar. Its own row is under RLS on ``id``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    require_second_factor = models.BooleanField(
        default=False, help_text="Members must sign in with an authenticator app to act here."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


def tenant_key(
    *, on_delete: Callable[..., None] = models.PROTECT, db_constraint: bool = True
) -> models.ForeignKey:
    """The tenant column every tenant table carries: it defaults to the current tenant context
    (raising outside one) and is never taken from user input."""
    return models.ForeignKey(
        Tenant,
        on_delete=on_delete,
        default=current_tenant_id,
        editable=False,
        related_name="+",
        db_constraint=db_constraint,
    )


class TenantOwned(models.Model):
    """Base for tenant-owned rows: the tenant comes from the context, never from user input."""

    tenant = tenant_key()

    class Meta:
        abstract = True


class Membership(TenantOwned):
    """A user's roles in one tenant. A user may belong to several tenants."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    roles = ArrayField(models.CharField(max_length=30, choices=Role.choices), default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_tenant_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant_id}: {', '.join(self.roles)}"

    @property
    def role_labels(self) -> list[str]:
        return [Role(role).label for role in self.roles if role in Role.values]


mpid_validator = RegexValidator(r"^[A-Z]{4}$", "An MPID is four capital letters (DT-027).")
role_code_validator = RegexValidator(
    r"^[A-Z]{3,5}$", "A DIP role code is 3 to 5 capitals (DT-009)."
)
dip_id_validator = RegexValidator(
    r"^[0-9A-Fa-f]{10}$", "A DIP ID is 10 hexadecimal characters (DT-006), e.g. 1009012345."
)


class DipIdentity(TenantOwned):
    """One DIP ID: the tenant acting as one market role under one MPID."""

    id = models.BigAutoField(primary_key=True)
    mpid = models.CharField("MPID", max_length=4, validators=[mpid_validator])
    role_code = models.CharField(max_length=5, validators=[role_code_validator])
    dip_id = models.CharField("DIP ID", max_length=10, validators=[dip_id_validator])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "DIP identity"
        verbose_name_plural = "DIP identities"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "mpid", "role_code"], name="identity_mpid_role"
            ),
            # Global, not per tenant: a DIP ID is one participant's in the whole market, and two
            # tenants claiming it would confuse routing. (Under Citus this becomes a lookup table.)
            models.UniqueConstraint(fields=["dip_id"], name="identity_dip_id_global"),
        ]

    def __str__(self) -> str:
        return f"{self.mpid}/{self.role_code} ({self.dip_id})"


class Connection(TenantOwned):
    """How one identity reaches one DIP environment. Its credentials never serve another."""

    id = models.BigAutoField(primary_key=True)
    identity = models.ForeignKey(DipIdentity, on_delete=models.PROTECT, related_name="connections")
    environment = models.CharField(max_length=4, choices=Environment.choices)
    dip_base_url = models.URLField("DIP base URL", max_length=300)
    dcp_id = models.CharField(
        "DCP ID",
        max_length=10,
        blank=True,
        validators=[dip_id_validator],
        help_text="Busbar's DIP Connection Provider id for this role (S1.DIPConnectionProviderID).",
    )
    # Envelope-encrypted (core.crypto), bound to the tenant and this column; never shown again.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_hint = models.CharField(max_length=8, blank=True, editable=False)
    api_key_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "identity", "environment"], name="connection_identity_env"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.identity} {self.environment}"


class Direction(models.TextChoices):
    INBOUND = "inbound", "Inbound (DIP to tenant)"
    OUTBOUND = "outbound", "Outbound (tenant to DIP)"


class ChannelStatus(models.TextChoices):
    TEST = "test", "Test"
    LIVE = "live", "Live"
    DEPRECATED = "deprecated", "Deprecated"
    DISABLED = "disabled", "Disabled"


interface_validator = RegexValidator(
    r"^(IF-\d{3}|REP-\d{3}[A-Z]?)$", "An interface id looks like IF-021 or REP-002A."
)


def new_webhook_token() -> str:
    """An unguessable path segment for a channel's inbound webhook URL."""
    return secrets.token_urlsafe(24)


class Channel(TenantOwned):
    """One DIP message channel (an IF or REP) on one connection, in one direction."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="channels")
    interface_id = models.CharField(max_length=8, validators=[interface_validator])
    direction = models.CharField(max_length=8, choices=Direction.choices)
    status = models.CharField(
        max_length=10, choices=ChannelStatus.choices, default=ChannelStatus.TEST
    )
    webhook_token = models.CharField(max_length=64, default=new_webhook_token, editable=False)
    expected_cadence = models.DurationField(
        null=True, blank=True, help_text="Alert when nothing has arrived for this long."
    )
    pinned_schema_version = models.CharField(
        max_length=10,
        blank=True,
        help_text="The DIP schema version this channel's messages must carry (blank: any).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "connection", "interface_id", "direction"],
                name="channel_connection_interface",
            ),
            # Global: the webhook route resolves a token to its tenant before any tenant is known.
            models.UniqueConstraint(fields=["webhook_token"], name="channel_webhook_token"),
        ]

    def __str__(self) -> str:
        return f"{self.interface_id} {self.direction} on {self.connection_id}"


class ChannelChangeState(models.TextChoices):
    PROPOSED = "proposed", "Proposed (awaiting a second person's approval)"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    ROLLED_BACK = "rolled_back", "Rolled back"


class ChannelChange(TenantOwned):
    """A change to a channel's configuration, kept for ever: what it was (``before``), what it
    becomes (``after``, only the fields that change), who proposed, approved, applied and rolled
    it back. A production connection's change needs an approver who is not the proposer."""

    id = models.BigAutoField(primary_key=True)
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="changes")
    state = models.CharField(
        max_length=12, choices=ChannelChangeState.choices, default=ChannelChangeState.PROPOSED
    )
    before = models.JSONField()
    after = models.JSONField()
    # A webhook rotation's tokens (unguessable URL paths) stay out of the shown diff.
    webhook_token_before = models.CharField(max_length=64, blank=True, editable=False)
    webhook_token_after = models.CharField(max_length=64, blank=True, editable=False)
    reason = models.CharField(max_length=500)
    requires_approval = models.BooleanField()
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_by_name = models.CharField(max_length=150)
    proposed_at = models.DateTimeField(auto_now_add=True)
    decided_by_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=500, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by_name = models.CharField(max_length=150, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "channel", "proposed_at"], name="channel_change_time")
        ]
        constraints = [
            # One open proposal per channel: a second would be decided against a stale "before".
            models.UniqueConstraint(
                fields=["tenant", "channel"],
                condition=models.Q(state="proposed"),
                name="channel_change_one_open",
            ),
        ]

    def __str__(self) -> str:
        return f"change {self.id} of channel {self.channel_id} ({self.state})"


class ApiScope(models.TextChoices):
    READ = "read", "Read identities, channels, certificates' status and events"
    SUBMIT = "submit", "Submit outbound messages"
    CERTIFICATES = "certificates", "Manage certificates (import, rotate, revoke)"


class ApiCredential(TenantOwned):
    """An API key for one of the tenant's client systems. The secret is shown once; only its hash
    is stored. The public ``prefix`` finds the row before the tenant is known."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=20, choices=ApiScope.choices), default=list)
    environment = models.CharField(max_length=4, choices=Environment.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prefix"], name="api_credential_prefix"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


# django-guardian's per-object grants, kept in tenant tables (guardian's generic ones are closed).
class ChannelUserObjectPermission(UserObjectPermissionBase):
    tenant = tenant_key(on_delete=models.CASCADE)
    content_object = models.ForeignKey(Channel, on_delete=models.CASCADE)


class ChannelGroupObjectPermission(GroupObjectPermissionBase):
    tenant = tenant_key(on_delete=models.CASCADE)
    content_object = models.ForeignKey(Channel, on_delete=models.CASCADE)


class ConnectionUserObjectPermission(UserObjectPermissionBase):
    tenant = tenant_key(on_delete=models.CASCADE)
    content_object = models.ForeignKey(Connection, on_delete=models.CASCADE)


class ConnectionGroupObjectPermission(GroupObjectPermissionBase):
    tenant = tenant_key(on_delete=models.CASCADE)
    content_object = models.ForeignKey(Connection, on_delete=models.CASCADE)


class CertificatePurpose(models.TextChoices):
    SIGNING = "signing", "Message signing"
    MTLS = "mtls", "mTLS client"
    TRUST_ANCHOR = "trust_anchor", "DIP trust anchor"


class CertificateStatus(models.TextChoices):
    """requested -> staged -> active -> retiring -> retired; revoked from any state."""

    REQUESTED = "requested", "Requested (key and CSR made, awaiting the signed certificate)"
    STAGED = "staged", "Staged (ready, not in use)"
    ACTIVE = "active", "Active"
    RETIRING = "retiring", "Retiring (overlap: verifies and finishes in-flight retries)"
    RETIRED = "retired", "Retired"
    REVOKED = "revoked", "Revoked"


class Certificate(TenantOwned):
    """One certificate of a connection's credential set, with its key encrypted at rest.

    Signing and mTLS certificates carry a private key (envelope-encrypted, bound to this row);
    trust anchors are the DIP's certificates that Busbar verifies against, with no key.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(
        Connection, on_delete=models.PROTECT, related_name="certificates"
    )
    purpose = models.CharField(max_length=12, choices=CertificatePurpose.choices)
    status = models.CharField(max_length=10, choices=CertificateStatus.choices)
    label = models.CharField(max_length=100, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Facts read from the certificate (blank while only a CSR exists).
    subject = models.CharField(max_length=500, blank=True)
    issuer = models.CharField(max_length=500, blank=True)
    serial = models.CharField(max_length=64, blank=True)
    fingerprint_sha256 = models.CharField(max_length=64, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    key_type = models.CharField(max_length=20, blank=True)
    key_size = models.PositiveIntegerField(null=True, blank=True)
    certificate_pem = models.TextField(blank=True)
    chain_pem = models.TextField(blank=True, help_text="Intermediate certificates, if any.")
    csr_pem = models.TextField(blank=True)
    private_key_encrypted = models.TextField(blank=True, editable=False)
    # Lifecycle.
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    overlap_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True)
    last_canary_at = models.DateTimeField(null=True, blank=True)
    last_canary_ok = models.BooleanField(null=True, blank=True)
    last_canary_detail = models.CharField(max_length=500, blank=True)
    last_expiry_warning_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "not_after"], name="certificate_expiry")]
        constraints = [
            # One key in use per connection and purpose, so "which key signs?" has one answer.
            models.UniqueConstraint(
                fields=["tenant", "connection", "purpose"],
                condition=models.Q(status="active")
                & ~models.Q(purpose=CertificatePurpose.TRUST_ANCHOR),
                name="certificate_one_active_key",
            ),
            models.UniqueConstraint(
                fields=["tenant", "connection", "purpose", "fingerprint_sha256"],
                condition=~models.Q(fingerprint_sha256=""),
                name="certificate_fingerprint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} {self.subject or '(CSR)'} [{self.status}]"


class Notification(TenantOwned):
    """Something a tenant's people must see (certificate expiry, a quiet channel, an open
    circuit...), addressed to a role. ``condition`` names what raised it
    (``channel_quiet:12``) so one condition notifies once until it clears or is due again;
    ``resolved_at`` is set when the condition has cleared."""

    id = models.BigAutoField(primary_key=True)
    role = models.CharField(max_length=30, choices=Role.choices)
    level = models.CharField(
        max_length=10, choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")]
    )
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    condition = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "role", "created_at"], name="notification_role"),
            models.Index(
                fields=["tenant", "condition", "created_at"], name="notification_condition"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"


class Invitation(TenantOwned):
    """A tenant admin's offer of roles to a person; a membership exists only once they accept.

    Readable by the tenant (RLS) and by the invitee before they belong to it (a separate
    ``FOR SELECT`` policy on ``app.user_id``); the tenant's name is copied here because the
    invitee may not read the tenant's own row until they join.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations"
    )
    roles = ArrayField(models.CharField(max_length=30, choices=Role.choices), default=list)
    tenant_name = models.CharField(max_length=200)
    invited_by = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=InvitationStatus.choices, default=InvitationStatus.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"],
                condition=models.Q(status="pending"),
                name="invitation_one_pending_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} to {self.tenant_name} ({self.status})"


class EnrolmentLink(TenantOwned):
    """A one-time link a tenant admin has sent a member to set up their second factor, which a
    stolen password alone does not give. Only the token's hash is stored."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrolment_links"
    )
    token_hash = models.CharField(max_length=64)
    issued_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "token_hash"], name="enrolment_link_token"),
        ]

    def __str__(self) -> str:
        return f"enrolment link for user {self.user_id} (until {self.expires_at:%Y-%m-%d %H:%M})"


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed (delivering)"
    OPEN = "open", "Open (paused after repeated failures)"
    HALF_OPEN = "half_open", "Half-open (one probe in flight)"


MAX_EVENTS_PER_REQUEST = 500


class DownstreamEndpoint(TenantOwned):
    """One of the tenant's systems that receives Busbar's events as signed webhooks.

    The URL is checked against private, loopback and link-local addresses when it is saved and
    again before every delivery (``core.netguard``). The circuit columns belong to delivery:
    ``consecutive_failures`` opens the circuit at a threshold, and after ``circuit_retry_at`` one
    probe may go (half-open); a success closes it.
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=100)
    url = models.URLField("URL", max_length=500)
    event_types = ArrayField(models.CharField(max_length=40), default=list)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    circuit_state = models.CharField(
        max_length=10, choices=CircuitState.choices, default=CircuitState.CLOSED
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    circuit_retry_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_failure = models.CharField(max_length=500, blank=True)
    # One event per request is the plain Standard Webhooks shape; a receiver that takes a batch
    # gets up to this many events in one signed request (each with its own id for deduplication),
    # which is how one endpoint keeps up with a busy tenant (bench/README.md, e2e_bench).
    events_per_request = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_EVENTS_PER_REQUEST)],
        help_text="events in one signed request; above 1 the body is an event.batch",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="downstream_endpoint_name"),
            models.CheckConstraint(
                condition=models.Q(events_per_request__gte=1)
                & models.Q(events_per_request__lte=MAX_EVENTS_PER_REQUEST),
                name="downstream_events_per_request",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class EndpointSecret(TenantOwned):
    """A signing secret of a downstream endpoint (``whsec_...``), envelope-encrypted.

    Every secret whose ``expires_at`` is empty or in the future signs each delivery, so during a
    rotation's overlap the receiver can verify with either the old secret or the new one.
    """

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        DownstreamEndpoint, on_delete=models.CASCADE, related_name="secrets"
    )
    secret_encrypted = models.TextField(editable=False)
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "endpoint"], name="endpoint_secret_endpoint")]

    def __str__(self) -> str:
        return f"secret {self.hint}... of endpoint {self.endpoint_id}"
