"""Normalised events and their delivery to the tenant's systems (imported by messaging.models).

``Event`` rows are derived from raw DIP messages by a versioned mapping (or published by Busbar
for outbound state changes) and never change. ``Delivery`` is the work row of one event for one
endpoint (at-least-once, retried on a database schedule); ``DeliveryAttempt`` is the append-only
log of every try.
"""

from __future__ import annotations

import uuid

from django.db import models

from tenants.models import DownstreamEndpoint, TenantOwned


class Event(TenantOwned):
    """One normalised event.

    ``uid`` is the stable id consumers deduplicate on (the webhook-id); for a derived event it is a
    function of the source message, the mapping and its version, so recording the same message
    twice makes no second event. ``position`` orders the tenant's feed: it is assigned under a
    per-tenant transaction lock (``services._insert``), so positions become visible in the order
    they were given and a cursor never skips an event that commits late.
    """

    id = models.BigAutoField(primary_key=True)
    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=40)
    subject = models.CharField(max_length=40, blank=True, help_text="the MPAN, where there is one")
    mapping = models.CharField(max_length=40, blank=True, help_text="name of the mapping")
    mapping_version = models.PositiveSmallIntegerField(null=True, blank=True)
    # The message store's messaging_message id (its foreign key comes with the store).
    source_message_id = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(
        max_length=100, blank=True, help_text="lineage of an event not derived from a message"
    )
    supersedes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    payload = models.JSONField()
    position = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "uid"], name="event_uid"),
            models.UniqueConstraint(fields=["tenant", "position"], name="event_feed"),
        ]
        indexes = [
            models.Index(fields=["tenant", "source_message_id"], name="event_source_message"),
            models.Index(fields=["tenant", "type", "created_at"], name="event_type_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.uid}"

    @property
    def webhook_id(self) -> str:
        return f"evt_{self.uid.hex}"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    PARKED = "parked", "Parked (gave up after the retry budget)"
    CANCELLED = "cancelled", "Cancelled (endpoint disabled)"


class Delivery(TenantOwned):
    """One event owed to one endpoint. Claimed with a lease; retried at ``next_attempt_at``."""

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="deliveries")
    endpoint = models.ForeignKey(
        DownstreamEndpoint, on_delete=models.PROTECT, related_name="deliveries"
    )
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "event", "endpoint"], name="delivery_once"),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "endpoint", "next_attempt_at"],
                condition=models.Q(state="pending"),
                name="delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} to endpoint {self.endpoint_id}: {self.state}"


class DeliveryAttempt(TenantOwned):
    """One try at delivering an event to an endpoint (append-only)."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.PROTECT, related_name="log")
    endpoint = models.ForeignKey(DownstreamEndpoint, on_delete=models.PROTECT, related_name="+")
    attempt = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    ok = models.BooleanField()
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "endpoint", "started_at"], name="attempt_endpoint_time"),
            models.Index(fields=["tenant", "delivery"], name="attempt_delivery"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.attempt} of delivery {self.delivery_id}: {self.http_status}"
