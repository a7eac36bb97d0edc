"""Reading reconciliation results: the latest verdict per control and channel, and history."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.db.models import Max

from messaging.reconciliation.models import Control, ReconciliationResult, ResultStatus


def latest_run_at() -> datetime | None:
    return ReconciliationResult.objects.aggregate(last=Max("run_at"))["last"]


def list_latest_results() -> list[ReconciliationResult]:
    """The latest verdict of each control for each channel (or for the tenant), control order."""
    latest = (
        ReconciliationResult.objects.order_by("control", "channel_id", "-id")
        .distinct("control", "channel_id")
        .select_related("channel__connection__identity")
    )
    order = {control: n for n, control in enumerate(Control.values)}
    return sorted(latest, key=lambda r: (order.get(r.control, 99), r.interface_id, r.direction))


def list_results(
    *, control: str | None = None, since: datetime | None = None, limit: int = 200
) -> list[ReconciliationResult]:
    rows = ReconciliationResult.objects.order_by("-run_at", "-id")
    if control:
        rows = rows.filter(control=control)
    if since:
        rows = rows.filter(run_at__gte=since)
    return list(rows.select_related("channel")[:limit])


def status_history(*, since: datetime) -> list[dict[str, Any]]:
    """Per run since ``since``, oldest first: how many verdicts had each status (for the chart)."""
    counts: dict[datetime, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ResultStatus, 0))
    for row in (
        ReconciliationResult.objects.filter(run_at__gte=since)
        .values_list("run_at", "status")
        .order_by("run_at")
    ):
        counts[row[0]][row[1]] = counts[row[0]].get(row[1], 0) + 1
    return [{"run_at": at, **by_status} for at, by_status in sorted(counts.items())]


def results_between(*, period_from: datetime, period_to: datetime) -> list[ReconciliationResult]:
    """Every verdict of runs in ``[period_from, period_to)``, oldest first (evidence packs)."""
    return list(
        ReconciliationResult.objects.filter(run_at__gte=period_from, run_at__lt=period_to)
        .order_by("run_at", "id")
        .select_related("channel")
    )
