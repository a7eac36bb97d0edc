"""Reads of the exception queue (inside the tenant's context)."""

from __future__ import annotations

from django.db.models import QuerySet

from messaging.exceptions.models import MessageException


def list_exceptions(
    *,
    state: str | None = "open",
    category: str | None = None,
    owner_queue: str | None = None,
    message_id: int | None = None,
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
    return list(qs.order_by("-created_at", "-id")[:limit])
