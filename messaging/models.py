"""Messaging models. ``DipExchange`` is the evidence of every request Busbar signs and sends to the
DIP: which certificates signed it and carried it, what it held, and what came back."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now

from core.tenancy import current_tenant_id
from tenants.models import Channel, Connection, Direction, TenantOwned, tenant_key


class ExchangeOperation(models.TextChoices):
    SUBMIT = "submit", "Submit messages"
    REPLAY = "replay", "Replay"
    REQUEUE = "requeue", "Requeue"
    WEBHOOK = "webhook", "Webhook configuration"
    STATUS = "status", "Status message"
    CANARY = "canary", "Certificate canary"


class DipExchange(TenantOwned):
    """One signed request to the DIP over mutual TLS, whatever its outcome (append-only).

    It answers "which certificate signed this message?" (search by sender reference or
    transaction id) and "what did this certificate sign?" (search by fingerprint). It keeps the
    body's hash, never the body: payloads live with the messages themselves.
    """

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    operation = models.CharField(max_length=10, choices=ExchangeOperation.choices)
    interface_id = models.CharField(max_length=8, blank=True)
    method = models.CharField(max_length=8)
    url = models.CharField(max_length=500)
    started_at = models.DateTimeField()
    elapsed_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, help_text="the client's verdict: accepted, resend...")
    error = models.CharField(max_length=500, blank=True)
    body_sha256 = models.CharField(max_length=64)
    signing_certificate_fingerprint = models.CharField(max_length=64)
    mtls_certificate_fingerprint = models.CharField(max_length=64)
    signature_date = models.CharField(max_length=30, blank=True)
    sender_references = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    transaction_ids = ArrayField(models.CharField(max_length=65), default=list, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "started_at"], name="exchange_time"),
            models.Index(
                fields=["tenant", "signing_certificate_fingerprint"], name="exchange_signing"
            ),
            models.Index(fields=["tenant", "mtls_certificate_fingerprint"], name="exchange_mtls"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.interface_id} {self.http_status or self.outcome}"


# --- The message store (messaging/store; the tables are written in migration 0002) -------------
# Ids come from the database (busbar_next_id(), time-ordered); every key is led by tenant_id.


def _store_id() -> models.BigIntegerField:
    return models.BigIntegerField(
        db_default=models.Func(function="busbar_next_id", output_field=models.BigIntegerField())
    )


class RawKind(models.TextChoices):
    DELIVERY = "delivery", "A DIP webhook delivery, as received"
    SUBMISSION = "submission", "A client system's submission, as received"
    PAYLOAD = "payload", "A message's final bytes, as sent"
    STATUS = "status", "A DIP status-message push, as received"


class RawBlob(TenantOwned):
    """Exact bytes as received or sent, zstd-compressed, stored once and never changed.

    A message row points at a slice of one blob (``raw_offset``, ``raw_length``). ``response_*`` is
    the answer Busbar gave to the request that brought the blob, so a duplicate gets the same one.
    """

    # The tenant, connection and channel are checked once per statement, not by keys (migration
    # 0022): a push's delivery row paid for five keys.
    tenant = tenant_key(db_constraint=False)
    pk = models.CompositePrimaryKey("tenant_id", "id")
    id = _store_id()
    kind = models.CharField(max_length=12, choices=RawKind.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    connection = models.ForeignKey(
        Connection, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    channel = models.ForeignKey(
        Channel, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(db_default=Now())
    body_zstd = models.BinaryField(null=True)
    body_sha256 = models.BinaryField()
    body_size = models.IntegerField()
    headers = models.JSONField(default=dict)
    message_count = models.IntegerField(default=0)
    response_status = models.SmallIntegerField(null=True)
    response_body = models.BinaryField(null=True)

    class Meta:
        db_table = "messaging_raw"

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.body_size} bytes)"


class Message(TenantOwned):
    """One DIP message in either direction: its identity (written once) and its work state."""

    # Every message row is checked on its way in, so each check costs per message received.
    # A statement trigger checks them instead of keys (busbar_message_raw_check, migrations 0021
    # and 0022): the raw payloads in one query over the statement's new rows, the connection and
    # channel (which also prove the tenant exists) once per distinct pair. Keys checked row by
    # row cost about 27 us for the partitioned payload table and 7 us for each of the others.
    tenant = tenant_key(db_constraint=False)
    pk = models.CompositePrimaryKey("tenant_id", "id")
    id = _store_id()
    direction = models.CharField(max_length=8, choices=Direction.choices)
    connection = models.ForeignKey(
        Connection, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    channel = models.ForeignKey(
        Channel, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    source_raw_id = models.BigIntegerField(null=True)
    raw_id = models.BigIntegerField(null=True)
    raw_offset = models.IntegerField(null=True)
    raw_length = models.IntegerField(null=True)
    sha256 = models.BinaryField(null=True)
    interface_id = models.CharField(max_length=8, default="")
    schema_version = models.CharField(max_length=10, default="")
    event_code = models.CharField(max_length=50, default="")
    # NULL until the DIP gives one (an outbound message before its 201).
    transaction_id = models.CharField(max_length=65, null=True)  # noqa: DJ001
    sender_unique_reference = models.CharField(max_length=200, default="")
    correlation_id = models.CharField(max_length=60, default="")
    mpan = models.CharField(max_length=13, default="")
    business_key = models.CharField(max_length=120, default="")
    # Outbound: an urgent submission is sent before normal ones (never before an earlier
    # message with its business key).
    urgent = models.BooleanField(db_default=False)
    created_at = models.DateTimeField(db_default=Now())
    state = models.CharField(max_length=20)
    attempts = models.IntegerField(default=0)
    lease_until = models.DateTimeField(null=True)
    next_attempt_at = models.DateTimeField(null=True)
    state_changed_at = models.DateTimeField(db_default=Now())
    swept_at = models.DateTimeField(null=True)
    last_error = models.TextField(default="")
    # Set when a replay sent it again (messaging.replay); the replay record says who and why.
    replayed_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "messaging_message"

    def __str__(self) -> str:
        return f"{self.direction} {self.interface_id} {self.id} ({self.state})"


class Transition(TenantOwned):
    """One step on a message's timeline (append-only): who moved it, when and why."""

    # Its message (which proves its tenant) is checked once per statement, not by keys per row
    # (migration 0025): the key to the partitioned message table was most of a state move's cost.
    tenant = tenant_key(db_constraint=False)
    pk = models.CompositePrimaryKey("tenant_id", "id")
    id = _store_id()
    message_id = models.BigIntegerField()
    at = models.DateTimeField(db_default=Now())
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    actor = models.CharField(max_length=150)
    reason = models.CharField(max_length=500, default="")
    detail = models.JSONField(null=True)

    class Meta:
        db_table = "messaging_transition"

    def __str__(self) -> str:
        return f"{self.message_id}: {self.from_state} -> {self.to_state}"


class Finding(TenantOwned):
    """One validation finding for a message from one validation run (append-only)."""

    # Its message is checked once per statement, as a timeline row's is (migration 0025).
    tenant = tenant_key(db_constraint=False)
    pk = models.CompositePrimaryKey("tenant_id", "id")
    id = _store_id()
    message_id = models.BigIntegerField()
    run_at = models.DateTimeField(db_default=Now())
    registry_version = models.CharField(max_length=40, default="")
    stage = models.CharField(max_length=12)
    severity = models.CharField(max_length=8)
    code = models.CharField(max_length=40)
    path = models.CharField(max_length=300, default="")
    text = models.CharField(max_length=1000, default="")
    rule = models.CharField(max_length=80, default="")

    class Meta:
        db_table = "messaging_finding"

    def __str__(self) -> str:
        return f"{self.severity} {self.code} on {self.message_id}"


class InboundKey(TenantOwned):
    """The inbound dedupe: a DIP transaction id (or content hash) claimed by its first message."""

    # Its tenant is checked once per statement (migration 0022), not by a key per row.
    tenant = tenant_key(db_constraint=False)
    pk = models.CompositePrimaryKey("tenant_id", "dedupe_key")
    dedupe_key = models.CharField(max_length=80)
    message_id = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "messaging_inbound_key"

    def __str__(self) -> str:
        return self.dedupe_key


class FlowRollup(TenantOwned):
    """How many messages entered ``state`` in ``hour`` (summed over shards)."""

    pk = models.CompositePrimaryKey(
        "tenant_id", "connection_id", "interface_id", "direction", "hour", "state", "shard"
    )
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    interface_id = models.CharField(max_length=8)
    direction = models.CharField(max_length=8)
    hour = models.DateTimeField()
    state = models.CharField(max_length=20)
    shard = models.SmallIntegerField()
    entered = models.BigIntegerField(default=0)
    # Summed age (creation to entering ``state``) of the messages counted in ``entered``: their
    # mean is the flow's latency to that state, with no look at the messages themselves.
    age_ms_sum = models.BigIntegerField(db_default=0)
    # Retries scheduled in the hour while the messages sat in ``state`` (entered stays 0 for them).
    retried = models.BigIntegerField(db_default=0)

    class Meta:
        db_table = "messaging_flow_rollup"
        # The overview reads one tenant's last hours of every flow: by time, not by flow (the
        # primary key's order), so it reads the hours it shows whatever history the table keeps.
        indexes = [models.Index(fields=["tenant", "hour"], name="flow_rollup_hour")]

    def __str__(self) -> str:
        return f"{self.interface_id} {self.state} {self.hour:%Y-%m-%d %H}: {self.entered}"


class StateCount(TenantOwned):
    """How many messages are in ``state`` now (summed over shards): backlogs at a glance."""

    pk = models.CompositePrimaryKey(
        "tenant_id", "connection_id", "interface_id", "direction", "state", "shard"
    )
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    interface_id = models.CharField(max_length=8)
    direction = models.CharField(max_length=8)
    state = models.CharField(max_length=20)
    shard = models.SmallIntegerField()
    count = models.BigIntegerField(default=0)

    class Meta:
        db_table = "messaging_state_count"

    def __str__(self) -> str:
        return f"{self.interface_id} {self.state}: {self.count}"


class CodeKind(models.TextChoices):
    FINDING = "finding", "A validation finding (error or fatal)"
    REJECTION = "rejection", "A rejection by the DIP or a market party"


class CodeRollup(TenantOwned):
    """How many validation failures (per stage and code) and rejections (per code) a channel had
    in an hour, summed over shards; kept by the statements that record them."""

    pk = models.CompositePrimaryKey(
        "tenant_id",
        "connection_id",
        "interface_id",
        "direction",
        "hour",
        "kind",
        "stage",
        "code",
        "shard",
    )
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    interface_id = models.CharField(max_length=8)
    direction = models.CharField(max_length=8)
    hour = models.DateTimeField()
    kind = models.CharField(max_length=10, choices=CodeKind.choices)
    stage = models.CharField(max_length=12)  # the validation stage; "" for a rejection
    code = models.CharField(max_length=40)
    shard = models.SmallIntegerField()
    count = models.BigIntegerField(db_default=0)

    class Meta:
        db_table = "messaging_code_rollup"
        indexes = [models.Index(fields=["tenant", "hour"], name="code_rollup_hour")]

    def __str__(self) -> str:
        return f"{self.interface_id} {self.kind} {self.stage} {self.code}: {self.count}"


# --- Evidence: the sealed ledger and assurance packs (messaging/evidence) ----------------------


class Seal(TenantOwned):
    """One signed Merkle root over a tenant's ledger entries of one time window, chained to the
    previous seal. ``body`` is exactly what was signed (canonical JSON); immutable once written."""

    pk = models.CompositePrimaryKey("tenant_id", "seq")
    seq = models.IntegerField()
    window_from = models.DateTimeField()
    window_to = models.DateTimeField()
    size = models.IntegerField()
    root = models.CharField(max_length=64)
    prev = models.CharField(max_length=64)
    body = models.JSONField()
    signature = models.CharField(max_length=200)
    key_id = models.CharField(max_length=32)
    sealed_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "messaging_seal"

    def __str__(self) -> str:
        return f"seal {self.seq} ({self.size} entries)"


class SealLeaf(TenantOwned):
    """One entry of a seal: which record (source and id) and the hash it was sealed with."""

    pk = models.CompositePrimaryKey("tenant_id", "seal_seq", "idx")
    seal_seq = models.IntegerField()
    idx = models.IntegerField()
    source = models.CharField(max_length=12)
    ref = models.CharField(max_length=40)
    leaf_hash = models.BinaryField()

    class Meta:
        db_table = "messaging_seal_leaf"

    def __str__(self) -> str:
        return f"{self.source} {self.ref} in seal {self.seal_seq}"


class LedgerCheck(TenantOwned):
    """One run of the ledger verification job for a tenant, kept as evidence (append-only)."""

    id = models.BigAutoField(primary_key=True)
    checked_at = models.DateTimeField(auto_now_add=True)
    seals_checked = models.IntegerField()
    entries_checked = models.IntegerField()
    problems = models.JSONField(default=list)

    class Meta:
        db_table = "messaging_ledger_check"
        indexes = [models.Index(fields=["tenant", "checked_at"], name="ledger_check_time")]

    def __str__(self) -> str:
        return f"ledger check {self.checked_at:%Y-%m-%d %H:%M}: {len(self.problems)} problem(s)"


class PackState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Being generated"
    READY = "ready", "Ready to download"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


class EvidencePack(TenantOwned):
    """A requested assurance pack: its scope, its progress while generated, and its file."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(auto_now_add=True)
    period_from = models.DateTimeField()
    period_to = models.DateTimeField()
    interfaces = ArrayField(models.CharField(max_length=8), default=list, blank=True)
    include_payloads = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=PackState.choices, default=PackState.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=200, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    message_count = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "messaging_evidence_pack"
        indexes = [models.Index(fields=["tenant", "requested_at"], name="evidence_pack_time")]

    def __str__(self) -> str:
        return f"evidence {self.period_from:%Y-%m-%d}..{self.period_to:%Y-%m-%d} ({self.state})"


class RetentionPolicy(TenantOwned):
    """How long a tenant's raw payloads are kept. At the end, the bytes are removed and their
    hashes stay, so sealed ledger entries and inclusion proofs keep verifying."""

    MIN_PAYLOAD_DAYS = 1

    tenant = models.OneToOneField(
        "tenants.Tenant",
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="+",
        default=current_tenant_id,
        editable=False,
    )
    payload_days = models.PositiveIntegerField(default=730)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    class Meta:
        db_table = "messaging_retention_policy"

    def __str__(self) -> str:
        return f"payloads kept {self.payload_days} days"


class IdempotencyKey(TenantOwned):
    """A client's ``Idempotency-Key`` and the answer its first request got (kept at least 24 h).

    The same key with the same request replays ``response``; with another request it is refused
    (422). A row without a response belongs to a request still running: the unique key makes a
    concurrent request with the same key wait for it, or get a 409.
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    status_code = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_tenant_key"),
        ]
        indexes = [models.Index(fields=["tenant", "expires_at"], name="idempotency_expiry")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.key}"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed: sending"
    OPEN = "open", "Open: the DIP is failing, nothing is sent until the probe"
    HALF_OPEN = "half_open", "Half-open: one probe request decides"


class ConnectionBreaker(TenantOwned):
    """The circuit breaker of one connection to the DIP (one row per connection, in the database
    so every worker sees the same state)."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(
        max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED
    )
    consecutive_failures = models.IntegerField(default=0)
    opened_at = models.DateTimeField(null=True)
    probe_at = models.DateTimeField(null=True)
    last_error = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField()
    # The connection's send rate limit, a token bucket shared by every worker: the tokens left
    # when it was last refilled (on the worker's clock).
    rate_tokens = models.FloatField(default=0.0)
    rate_refilled_at = models.DateTimeField(null=True)
    # The drain after an outage, for the tenant to watch: when it started, the backlog it found
    # and how many of those it has moved on since (sent, rejected or parked).
    drain_started_at = models.DateTimeField(null=True)
    drain_finished_at = models.DateTimeField(null=True)
    drain_backlog = models.IntegerField(default=0)
    drain_done = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "connection"], name="breaker_connection"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}: {self.state}"


class AuditArchive(TenantOwned):
    """One calendar month of a tenant's audit log moved out of the live table into a compressed
    file (the records exactly as the ledger sealed them), kept for the archive period, then
    purged. The live table keeps at least ``BUSBAR_AUDIT_LIVE_DAYS`` (never under 92: the DIP's
    Code of Connection asks for three months live and twelve archived)."""

    id = models.BigAutoField(primary_key=True)
    period_from = models.DateTimeField()
    period_to = models.DateTimeField()
    events = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    file_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    purge_after = models.DateTimeField()
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "messaging_audit_archive"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period_from"], name="audit_archive_month"),
        ]

    def __str__(self) -> str:
        return f"audit {self.period_from:%Y-%m}: {self.events} events"


class BreakGlassGrant(TenantOwned):
    """Provider support's recorded permission to read one tenant's message content (MPANs and
    payloads) until ``expires_at`` or until ended early. The database checks it: the support
    role's only way to content, the ``support_message_content`` view, returns rows of a tenant
    only while an active grant names the session's ``app.user_id`` (migration 0012)."""

    id = models.BigAutoField(primary_key=True)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    staff_username = models.CharField(max_length=150)
    reason = models.TextField()
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "staff_user", "expires_at"], name="break_glass_staff")
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("granted_at")),
                name="break_glass_expires_after_granted",
            ),
            models.CheckConstraint(condition=~models.Q(reason=""), name="break_glass_has_reason"),
        ]

    def __str__(self) -> str:
        return f"break-glass for {self.staff_username} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_active(self, *, at: datetime) -> bool:
        return self.ended_at is None and self.granted_at <= at < self.expires_at


# The stage packages' tables, imported here so that Django finds them in the messaging app.
from messaging.events.models import Delivery, DeliveryAttempt, Event  # noqa: E402, F401
from messaging.exceptions.models import ExceptionHandling, MessageException  # noqa: E402, F401
from messaging.reconciliation.models import ReconciliationResult  # noqa: E402, F401
from messaging.replay.models import Replay  # noqa: E402, F401
from messaging.validation.models import KeyVersion as KeyVersion  # noqa: E402
from messaging.validation.models import SpecSchema as SpecSchema  # noqa: E402
from messaging.validation.models import SpecVersion as SpecVersion  # noqa: E402
from messaging.validation.models import (  # noqa: E402
    TenantValidationSettings as TenantValidationSettings,
)
