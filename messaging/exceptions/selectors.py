"""Reads of the exception queue (inside the tenant's context)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from messaging.exceptions.models import (
    Actor,
    Category,
    ExceptionHandling,
    ExceptionState,
    MessageException,
    Severity,
)
from tenants.selectors import in_environment

UNRESOLVED = (ExceptionState.OPEN, ExceptionState.RETRYING)
# "whose": the client's own queue, Busbar's, the DIP's or a market party's, or the signed-in
# person's assignments.
WHOSE = ("yours", "provider", "market_party", "mine")
_ACTOR_OF = {"yours": Actor.CLIENT, "provider": Actor.PROVIDER, "market_party": Actor.MARKET_PARTY}


@dataclass(frozen=True)
class ExceptionFilter:
    """A queue view; every field narrows. Unknown values are dropped by :meth:`clean`."""

    state: str = ExceptionState.OPEN  # "all" for every state
    category: str = ""
    severity: str = ""
    whose: str = ""
    overdue: bool = False
    interface_id: str = ""
    assignee_membership_id: int | None = None  # the person asking, for whose="mine"

    def clean(self) -> ExceptionFilter:
        return ExceptionFilter(
            state=self.state if self.state in (*ExceptionState.values, "all") else "open",
            category=self.category if self.category in Category.values else "",
            severity=self.severity if self.severity in Severity.values else "",
            whose=self.whose if self.whose in WHOSE else "",
            overdue=bool(self.overdue),
            interface_id=self.interface_id[:8],
            assignee_membership_id=self.assignee_membership_id,
        )

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters (what a bulk action is confirmed against)."""
        return {
            "state": self.state,
            "category": self.category,
            "severity": self.severity,
            "whose": self.whose,
            "overdue": "1" if self.overdue else "",
            "interface": self.interface_id,
        }


def filter_exceptions(
    filters: ExceptionFilter, *, now: dt.datetime | None = None
) -> QuerySet[MessageException]:
    f = filters.clean()
    # An API key sees only its environment's exceptions, as with messages.
    qs: QuerySet[MessageException] = in_environment(
        MessageException.objects.all(), "connection__environment"
    )
    if f.state != "all":
        qs = qs.filter(state=f.state)
    if f.category:
        qs = qs.filter(category=f.category)
    if f.severity:
        qs = qs.filter(severity=f.severity)
    if f.whose in _ACTOR_OF:
        qs = qs.filter(to_act=_ACTOR_OF[f.whose])
    elif f.whose == "mine":
        qs = qs.filter(assignee_id=f.assignee_membership_id or -1)
    if f.overdue:
        qs = qs.filter(state__in=UNRESOLVED, sla_due_at__lte=now or timezone.now())
    if f.interface_id:
        qs = qs.filter(interface_id=f.interface_id)
    return qs


def list_exceptions(
    *,
    state: str | None = "open",
    category: str | None = None,
    owner_queue: str | None = None,
    message_id: int | None = None,
    to_act: str | None = None,
    limit: int = 100,
) -> list[MessageException]:
    qs: QuerySet[MessageException] = MessageException.objects.all()
    if state:
        qs = qs.filter(state=state)
    if category:
        qs = qs.filter(category=category)
    if owner_queue:
        qs = qs.filter(owner_queue=owner_queue)
    if message_id is not None:
        qs = qs.filter(message_id=message_id)
    if to_act:
        qs = qs.filter(to_act=to_act)
    return list(qs.order_by("-created_at", "-id")[:limit])


def whose_counts(*, membership_id: int | None) -> dict[str, int]:
    """Unresolved exceptions per "whose" view: what is the client's to act on, Busbar's, a
    market party's, and assigned to the person asking."""
    row = MessageException.objects.filter(state__in=UNRESOLVED).aggregate(
        yours=Count("id", filter=Q(to_act=Actor.CLIENT)),
        provider=Count("id", filter=Q(to_act=Actor.PROVIDER)),
        market_party=Count("id", filter=Q(to_act=Actor.MARKET_PARTY)),
        mine=Count("id", filter=Q(assignee_id=membership_id or -1)),
        overdue=Count("id", filter=Q(sla_due_at__lte=timezone.now())),
    )
    return {key: int(value or 0) for key, value in row.items()}


def queue_summary() -> list[dict[str, object]]:
    """Per category and severity: how many are unresolved, the oldest's raise time, how many are
    past their SLA."""
    now = timezone.now()
    rows = (
        MessageException.objects.filter(state__in=UNRESOLVED)
        .values("category", "severity")
        .annotate(
            count=Count("id"),
            overdue=Count("id", filter=Q(sla_due_at__lte=now)),
        )
        .order_by("category", "severity")
    )
    oldest = {
        (r["category"], r["severity"]): r["created_at"]
        for r in MessageException.objects.filter(state__in=UNRESOLVED)
        .order_by("category", "severity", "created_at")
        .distinct("category", "severity")
        .values("category", "severity", "created_at")
    }
    return [{**r, "oldest": oldest.get((r["category"], r["severity"]))} for r in rows]


def get_exception(*, exception_id: int) -> MessageException | None:
    """One exception of the current tenant, or None (another tenant's looks the same)."""
    return (
        in_environment(MessageException.objects.all(), "connection__environment")
        .select_related("assignee__user")
        .filter(id=exception_id)
        .first()
    )


def list_handling(*, exception_id: int) -> list[ExceptionHandling]:
    return list(ExceptionHandling.objects.filter(exception_id=exception_id).order_by("at", "id"))
