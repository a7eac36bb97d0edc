"""The reconciliation results table (imported by ``messaging.models`` so Django finds it)."""

from __future__ import annotations

import uuid

from django.db import models

from tenants.models import Channel, TenantOwned


class Control(models.TextChoices):
    CADENCE = "cadence", "Expected vs received (channel cadence)"
    ACKNOWLEDGED = "acknowledged", "Submitted vs acknowledged (outbound)"
    PROCESSED = "processed", "Received vs processed and delivered (inbound)"
    APPOINTMENT_CHAIN = "appointment_chain", "Appointment chain IF-031 to IF-036 per MPAN"
    DAILY_CONSUMPTION = "daily_consumption", "Daily IF-021 per MPAN"
    DIP_RECORD = "dip_record", "Busbar's record vs the DIP's (/replay, gaps filled by /requeue)"


class ResultStatus(models.TextChoices):
    OK = "ok", "In balance"
    PENDING = "pending", "In flight (within its deadline)"
    FILLED = "filled", "Gap found and requeued"
    BREACH = "breach", "Out of balance"
    ERROR = "error", "Could not run"


class ReconciliationResult(TenantOwned):
    """One control's verdict for one channel (or the whole tenant) in one run (append-only).

    ``expected`` and ``found`` are the two sides compared (messages, chains, MPANs); ``detail``
    names what is missing so someone can act on it."""

    id = models.BigAutoField(primary_key=True)
    run_id = models.UUIDField(default=uuid.uuid4)
    control = models.CharField(max_length=20, choices=Control.choices)
    channel = models.ForeignKey(Channel, null=True, on_delete=models.PROTECT, related_name="+")
    interface_id = models.CharField(max_length=8, blank=True)
    direction = models.CharField(max_length=8, blank=True)
    window_from = models.DateTimeField()
    window_to = models.DateTimeField()
    expected = models.BigIntegerField()
    found = models.BigIntegerField()
    status = models.CharField(max_length=8, choices=ResultStatus.choices)
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict)
    run_at = models.DateTimeField()

    class Meta:
        db_table = "messaging_reconciliation_result"
        indexes = [
            models.Index(fields=["tenant", "run_at"], name="reconciliation_time"),
            models.Index(fields=["tenant", "control", "run_at"], name="reconciliation_control"),
        ]

    def __str__(self) -> str:
        return f"{self.control} {self.interface_id} {self.status} ({self.found}/{self.expected})"
