"""The tenant's audit log, for tenant admins and auditors."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.views.home import tenant_required
from core.audit import request_source
from core.models import AuditEvent
from messaging import breakglass
from messaging.evidence import audit_archive
from messaging.models import AuditArchive, BreakGlassGrant
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
        "break_glass": breakglass.list_grants(
            tenant_id=request.tenant.id,  # type: ignore[attr-defined]
            active_at=timezone.now(),
        ),
        "may_end_break_glass": selectors.user_has_role(request.membership, Role.TENANT_ADMIN),  # type: ignore[attr-defined]
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/activity.html#event-table", context)
    return render(request, "console/activity.html", context)


@require_POST
@tenant_required
def break_glass_end(request: HttpRequest, grant_id: int) -> HttpResponse:
    """A tenant admin ends provider support's access to the tenant's content now."""
    if not selectors.user_has_role(request.membership, Role.TENANT_ADMIN):  # type: ignore[attr-defined]
        return render(request, "console/403.html", {"need": "tenant admin"}, status=403)
    user = request.user
    try:
        breakglass.end_break_glass(
            tenant_id=request.tenant.id,  # type: ignore[attr-defined]
            grant_id=grant_id,
            ended_by=user.get_username(),
            actor_user_id=user.pk,
            source_address=request_source(request),
        )
    except BreakGlassGrant.DoesNotExist as missing:
        raise Http404("No such grant") from missing
    except breakglass.BreakGlassError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Provider support's access to your content has ended.")
    return redirect("console:activity")
