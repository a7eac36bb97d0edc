"""How long an exception may stay open: a target per category and severity, stamped on the
exception as ``sla_due_at`` when it is raised, and the selector notifications call to find those
past it.

The targets follow who acts and how much is at stake: a fatal technical fault is Busbar's to fix
within the hour; a data-quality finding on a warning can wait for the next working days. The
table is overridable in settings (``BUSBAR_EXCEPTION_SLA_HOURS``, the same shape) for a tenant
contract that says otherwise.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet

from core.tenancy import tenant_context
from messaging.exceptions.models import Category, ExceptionState, MessageException, Severity

# hours, by category then severity
DEFAULT_SLA_HOURS: dict[str, dict[str, float]] = {
    Category.TECHNICAL: {
        Severity.FATAL: 1,
        Severity.ERROR: 4,
        Severity.WARNING: 24,
        Severity.INFO: 72,
    },
    Category.MARKET_OPERATIONS: {
        Severity.FATAL: 4,
        Severity.ERROR: 24,
        Severity.WARNING: 72,
        Severity.INFO: 120,
    },
    Category.DATA_QUALITY: {
        Severity.FATAL: 8,
        Severity.ERROR: 24,
        Severity.WARNING: 72,
        Severity.INFO: 120,
    },
    # Retried automatically when the dependency arrives; a person looks once it is overdue.
    Category.AWAITING_DEPENDENCY: {
        Severity.FATAL: 24,
        Severity.ERROR: 24,
        Severity.WARNING: 48,
        Severity.INFO: 48,
    },
}


def sla_hours(category: str, severity: str) -> float:
    """The target for one (category, severity); an unknown pair gets the strictest of its
    category (or a day), never none."""
    table = {**DEFAULT_SLA_HOURS, **getattr(settings, "BUSBAR_EXCEPTION_SLA_HOURS", {})}
    per_severity = table.get(category) or {}
    if severity in per_severity:
        return float(per_severity[severity])
    return float(min(per_severity.values(), default=24))


def sla_due(*, category: str, severity: str, raised_at: dt.datetime) -> dt.datetime:
    return raised_at + dt.timedelta(hours=sla_hours(category, severity))


def past_sla_queryset(now: dt.datetime) -> QuerySet[MessageException]:
    """Unresolved exceptions whose target has passed (inside the current tenant's context)."""
    return MessageException.objects.filter(
        state__in=[ExceptionState.OPEN, ExceptionState.RETRYING], sla_due_at__lte=now
    ).order_by("sla_due_at", "id")


def past_sla(tenant_id: UUID | str, now: dt.datetime) -> list[MessageException]:
    """The tenant's open or retrying exceptions past their SLA at ``now``, most overdue first.

    Enters the tenant's context itself, so a notification task can call it with ids alone.
    """
    with tenant_context(tenant_id):
        return list(past_sla_queryset(now).select_related("assignee__user"))
