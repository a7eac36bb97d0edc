"""Payload retention: raw bytes are removed at the end of a tenant's retention period while
their hashes, sizes and ledger entries stay, so sealed evidence keeps verifying."""

from __future__ import annotations

from django.db import connection, transaction

from core.audit import record_event
from messaging.models import RetentionPolicy


@transaction.atomic
def set_payload_retention(*, days: int, actor: str) -> RetentionPolicy:
    """Set how many days the current tenant's raw payloads are kept (at least one)."""
    if days < RetentionPolicy.MIN_PAYLOAD_DAYS:
        raise ValueError(f"payloads must be kept at least {RetentionPolicy.MIN_PAYLOAD_DAYS} day")
    policy, _ = RetentionPolicy.objects.update_or_create(
        defaults={"payload_days": days, "updated_by": actor}
    )
    record_event(
        action="retention.policy_changed",
        actor=actor,
        object_type="retention_policy",
        detail={"payload_days": days},
    )
    return policy


@transaction.atomic
def purge_expired_payloads(*, actor: str = "system:retention") -> int:
    """Remove the current tenant's payloads past its retention; returns how many blobs."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT busbar_purge_payloads()")
        purged = int(cursor.fetchone()[0])
    if purged:
        record_event(action="retention.payloads_removed", actor=actor, detail={"blobs": purged})
    return purged
