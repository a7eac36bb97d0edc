"""The replay request's table (imported by ``messaging.models`` so Django finds it)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from tenants.models import Connection, TenantOwned


class ReplayKind(models.TextChoices):
    INBOUND = "inbound", "Inbound: redeliver the events downstream"
    OUTBOUND = "outbound", "Outbound: resend to the DIP"
    DIP_REPLAY = "dip_replay", "Ask the DIP to replay a window (pull)"
    DIP_REQUEUE = "dip_requeue", "Ask the DIP to requeue a window (push again)"


class ReplayReason(models.TextChoices):
    DOWNSTREAM_OUTAGE = "downstream_outage", "The client's system missed it (outage)"
    DOWNSTREAM_DATA_LOSS = "downstream_data_loss", "The client's system lost data"
    DIP_OUTAGE = "dip_outage", "The DIP or the connection was down"
    RECONCILIATION_GAP = "reconciliation_gap", "Reconciliation found a gap"
    CORRECTED_CONFIGURATION = "corrected_configuration", "Configuration corrected"
    MARKET_PARTY_REQUEST = "market_party_request", "A market party asked for it"
    OTHER = "other", "Other (say why)"


class ReplayState(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved, running"
    REFUSED = "refused", "Refused"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class Replay(TenantOwned):
    """One deliberate replay: who asked and why, the checks shown before anything moved, who
    approved (production), every message affected and what happened to each."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=12, choices=ReplayKind.choices)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    production = models.BooleanField()
    reason_code = models.CharField(max_length=30, choices=ReplayReason.choices)
    reason_text = models.TextField()
    selection = models.JSONField(default=dict, blank=True, help_text="ids or filter as asked")
    message_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    # DIP window requests: the channel and the window asked for.
    interface_id = models.CharField(max_length=8, blank=True)
    window_from = models.DateTimeField(null=True, blank=True)
    window_to = models.DateTimeField(null=True, blank=True)
    checks = models.JSONField(default=list, blank=True)
    state = models.CharField(
        max_length=10, choices=ReplayState.choices, default=ReplayState.PENDING
    )
    requested_by = models.CharField(max_length=150)
    requested_by_user_id = models.BigIntegerField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_by_user_id = models.BigIntegerField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    outcome = models.JSONField(default=dict, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "messaging_replay"
        indexes = [models.Index(fields=["tenant", "state", "requested_at"], name="replay_state")]

    def __str__(self) -> str:
        return f"replay {self.id} ({self.kind}, {self.state})"
