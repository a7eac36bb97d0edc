"""Reads of replay requests (inside the tenant's context)."""

from __future__ import annotations

from django.db.models import QuerySet

from messaging.replay.models import Replay, ReplayState
from tenants.selectors import in_environment


def list_replays(*, state: str | None = None, limit: int = 100) -> list[Replay]:
    qs: QuerySet[Replay] = in_environment(
        Replay.objects.select_related("connection"), "connection__environment"
    )
    if state:
        qs = qs.filter(state=state)
    return list(qs.order_by("-requested_at", "-id")[:limit])


def get_replay(*, replay_id: int) -> Replay | None:
    """One replay of the current tenant, or None (another tenant's looks the same)."""
    return (
        in_environment(Replay.objects.select_related("connection"), "connection__environment")
        .filter(id=replay_id)
        .first()
    )


def pending_count() -> int:
    return Replay.objects.filter(state=ReplayState.PENDING).count()
