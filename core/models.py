"""Core models: the append-only audit log."""

from __future__ import annotations

import uuid

from django.db import models


class AuditEvent(models.Model):
    """One user action or security event. Append-only: the runtime role may only insert and read,
    and a trigger refuses UPDATE and DELETE for everyone outside a retention purge.

    ``tenant_id`` is null for events that belong to no tenant yet (a webhook for an unknown channel,
    a failed login for an unknown user); only provider support sees those.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant_id = models.UUIDField(null=True, blank=True, db_index=False)
    occurred_at = models.DateTimeField(auto_now_add=True)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(
        max_length=200, help_text="who acted: a username, api:<key prefix>, system"
    )
    action = models.CharField(max_length=100, help_text="dotted verb, e.g. tenant.created")
    category = models.CharField(
        max_length=20,
        choices=[("activity", "User activity"), ("security", "Security event")],
        default="activity",
    )
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    source_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant_id", "occurred_at"], name="audit_tenant_time")]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"
