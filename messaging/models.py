"""Messaging models. ``DipExchange`` is the evidence of every request Busbar signs and sends to the
DIP: which certificates signed it and carried it, what it held, and what came back."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from tenants.models import Connection, TenantOwned


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


# The stage packages' tables, imported here so that Django finds them in the messaging app.
from messaging.exceptions.models import MessageException  # noqa: E402, F401
