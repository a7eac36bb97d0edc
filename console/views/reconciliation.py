"""Reconciliation: the latest verdict of every control, the runs' history as a chart, and a
button that asks a worker to run the controls now (they call the DIP, never this request)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.views.home import tenant_required
from core.audit import record_event
from core.tenancy import current_tenant_id
from messaging.reconciliation import selectors
from messaging.reconciliation.models import Control, ResultStatus
from messaging.tasks import reconcile_tenant_task
from tenants.models import Role
from tenants.selectors import user_has_role

HISTORY = timedelta(days=7)
RUNNERS = (Role.TENANT_ADMIN, Role.MESSAGE_OPERATOR)
CHART_HEIGHT = 60
# Drawn bottom to top, worst on top so it catches the eye.
CHART_ORDER = [
    ResultStatus.OK,
    ResultStatus.PENDING,
    ResultStatus.FILLED,
    ResultStatus.ERROR,
    ResultStatus.BREACH,
]


def _chart(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars, one per run: how many verdicts had each status (SVG drawn by the page)."""
    tallest = max((sum(run[s] for s in CHART_ORDER) for run in history), default=0) or 1
    width = 8
    bars = []
    for n, run in enumerate(history[-90:]):
        y = CHART_HEIGHT
        segments = []
        for status in CHART_ORDER:
            height = run[status] * CHART_HEIGHT / tallest
            if height:
                y -= height
                segments.append({"status": status, "y": round(y, 2), "height": round(height, 2)})
        bars.append({"x": n * width, "segments": segments, "run_at": run["run_at"], "counts": run})
    return {
        "bars": bars,
        "width": max(len(bars) * width, width),
        "height": CHART_HEIGHT,
        "tallest": tallest,
    }


@tenant_required
def reconciliation(request: HttpRequest) -> HttpResponse:
    membership = request.membership  # type: ignore[attr-defined]
    latest = selectors.list_latest_results()
    context = {
        "latest": latest,
        "last_run": selectors.latest_run_at(),
        "breaches": sum(r.status == ResultStatus.BREACH for r in latest),
        "chart": _chart(selectors.status_history(since=timezone.now() - HISTORY)),
        "statuses": CHART_ORDER,
        "controls": Control.choices,
        # Viewers see aggregates only: no MPANs or transaction ids.
        "show_detail": not user_has_role(membership, Role.VIEWER) or len(membership.roles) > 1,
        "may_run": user_has_role(membership, *RUNNERS),
        "history": selectors.list_results(limit=50),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/reconciliation/page.html#reconciliation-results", context)
    return render(request, "console/reconciliation/page.html", context)


@tenant_required
@require_POST
def reconciliation_run(request: HttpRequest) -> HttpResponse:
    if not user_has_role(request.membership, *RUNNERS):  # type: ignore[attr-defined]
        return render(request, "console/403.html", {"need": "message operator"}, status=403)
    actor = request.user.get_username()
    record_event(action="reconciliation.run_requested", actor=actor, object_type="tenant")
    reconcile_tenant_task.delay_on_commit(str(current_tenant_id()), actor)
    messages.success(request, "The controls will run in a moment; refresh to see their results.")
    return redirect("console:reconciliation")
