"""Reading the message store: counters for dashboards, a message's timeline and findings.

All reads run under the caller's tenant context; "not this tenant's" and "does not exist" look the
same (None or empty).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db.models import Sum

from messaging.models import Finding, FlowRollup, Message, StateCount, Transition
from tenants.selectors import in_environment


def get_message(*, message_id: int) -> Message | None:
    """The current tenant's message with this id, or None; an API key sees only its own
    environment's messages (a connection's messages never serve another environment)."""
    return in_environment(Message.objects.filter(id=message_id), "connection__environment").first()


def list_timeline(*, message_id: int) -> list[Transition]:
    return list(Transition.objects.filter(message_id=message_id).order_by("id"))


def list_findings(*, message_id: int) -> list[Finding]:
    return list(Finding.objects.filter(message_id=message_id).order_by("id"))


def state_counts(*, direction: str | None = None) -> dict[tuple[str, str, str], int]:
    """Messages in each state now: {(direction, interface, state): count}, zeros left out."""
    rows = StateCount.objects.all()
    if direction:
        rows = rows.filter(direction=direction)
    totals = rows.values("direction", "interface_id", "state").annotate(total=Sum("count"))
    return {
        (r["direction"], r["interface_id"], r["state"]): int(r["total"])
        for r in totals
        if r["total"]
    }


def hourly_entries(
    *, since: datetime, state: str, direction: str | None = None
) -> dict[str, dict[datetime, int]]:
    """How many messages entered ``state`` per hour since ``since``, per interface."""
    rows = FlowRollup.objects.filter(hour__gte=since, state=state)
    if direction:
        rows = rows.filter(direction=direction)
    series: dict[str, dict[datetime, int]] = defaultdict(dict)
    for r in rows.values("interface_id", "hour").annotate(total=Sum("entered")):
        series[r["interface_id"]][r["hour"]] = int(r["total"])
    return dict(series)
