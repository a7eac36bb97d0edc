"""Creating and closing exceptions. Callers run inside the tenant's context."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from messaging.exceptions.models import (
    Actor,
    Category,
    ExceptionState,
    MessageException,
    ResolutionCode,
    Severity,
)
from messaging.exceptions.sla import sla_due

# Where each category lands by default, and whose it is to act (DESIGN section 4, step 5).
ROUTES: dict[str, tuple[str, str]] = {
    Category.TECHNICAL: ("provider-support", Actor.PROVIDER),
    Category.MARKET_OPERATIONS: ("market-operations", Actor.MARKET_PARTY),
    Category.DATA_QUALITY: ("client-data-quality", Actor.CLIENT),
    # The message it waits for comes from another market party; retried automatically.
    Category.AWAITING_DEPENDENCY: ("awaiting-dependency", Actor.MARKET_PARTY),
}


@dataclass(frozen=True)
class ExceptionSpec:
    """One failure to record: what went wrong, for which message, and who acts."""

    code: str
    title: str
    category: str
    severity: str = Severity.ERROR
    message_id: int | None = None
    raw_id: int | None = None
    connection_id: int | None = None
    interface_id: str = ""
    transaction_id: str = ""
    detail: Mapping[str, Any] | None = None
    dependency_key: str = ""
    to_act: str | None = None
    owner_queue: str | None = None
    direction: str = "in"


@transaction.atomic
def raise_exceptions(*, specs: Iterable[ExceptionSpec]) -> int:
    """Record failures as open exceptions, one per (message, code): a failure already open is
    counted again (``occurrences``) rather than duplicated. Returns how many were new."""
    created = 0
    now = timezone.now()
    for spec in specs:
        queue, actor = ROUTES[spec.category]
        open_one = MessageException.objects.filter(
            message_id=spec.message_id, code=spec.code, state=ExceptionState.OPEN
        )
        if spec.message_id is not None and open_one.update(
            occurrences=F("occurrences") + 1, updated_at=timezone.now()
        ):
            continue
        MessageException.objects.create(
            connection_id=spec.connection_id,
            message_id=spec.message_id,
            raw_id=spec.raw_id,
            interface_id=spec.interface_id[:8],
            transaction_id=spec.transaction_id[:65],
            category=spec.category,
            severity=spec.severity,
            owner_queue=spec.owner_queue or queue,
            to_act=spec.to_act or actor,
            code=spec.code[:40],
            title=spec.title[:300],
            detail=dict(spec.detail or {}),
            dependency_key=spec.dependency_key[:200],
            direction=spec.direction,
            sla_due_at=sla_due(category=spec.category, severity=spec.severity, raised_at=now),
        )
        created += 1
    return created


@transaction.atomic
def resolve_exceptions(*, message_ids: Iterable[int], resolution: str) -> int:
    """Close the open exceptions of messages that have since succeeded."""
    return MessageException.objects.filter(
        message_id__in=list(message_ids), state=ExceptionState.OPEN
    ).update(
        state=ExceptionState.RESOLVED,
        resolved_at=timezone.now(),
        resolution=resolution[:300],
        resolution_code=ResolutionCode.AUTOMATIC,
        updated_at=timezone.now(),
    )


def awaiting(*, dependency_keys: Iterable[str]) -> list[MessageException]:
    """Open awaiting-dependency exceptions waiting for any of these keys (now arrived)."""
    keys = [k for k in dependency_keys if k]
    if not keys:
        return []
    return list(
        MessageException.objects.filter(
            category=Category.AWAITING_DEPENDENCY,
            state=ExceptionState.OPEN,
            dependency_key__in=keys,
        )
    )
