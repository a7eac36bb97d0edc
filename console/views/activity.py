"""The tenant's audit log, for tenant admins and auditors."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console.views.home import tenant_required
from core.models import AuditEvent
from messaging.evidence import audit_archive
from messaging.models import AuditArchive
from tenants import selectors
from tenants.models import Role

PAGE_SIZE = 50


@tenant_required
def activity(request: HttpRequest) -> HttpResponse:
    """Who did what and when in this tenant (RLS shows only its own events), newest first."""
    if not selectors.user_has_role(request.membership, Role.TENANT_ADMIN, Role.AUDITOR):  # type: ignore[attr-defined]
        return render(request, "console/403.html", {"need": "tenant admin or auditor"}, status=403)
    events = AuditEvent.objects.order_by("-occurred_at")
    category = request.GET.get("category", "")
    if category in {"activity", "security"}:
        events = events.filter(category=category)
    action = request.GET.get("action", "").strip()
    if action:
        events = events.filter(action__startswith=action)
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "category": category,
        "action": action,
        "archives": AuditArchive.objects.order_by("-period_from")[:36],
        "live_days": audit_archive.live_days(),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/activity.html#event-table", context)
    return render(request, "console/activity.html", context)
