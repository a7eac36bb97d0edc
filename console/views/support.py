"""Provider support's console page: every tenant's health at a glance, no content."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.expiry import expiry_gauge
from core.audit import request_source
from messaging import breakglass
from messaging import support as cross_tenant
from messaging.models import BreakGlassGrant
from tenants import support
from tenants.authentication import in_staff_role, session_has_second_factor
from tenants.models import StaffRole


def staff_with_second_factor(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Busbar's support and admin staff only (others: 404), and only with a verified second
    factor (others are sent to set one up)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not in_staff_role(request, StaffRole.PROVIDER_SUPPORT, StaffRole.PROVIDER_ADMIN):
            raise Http404("No such page")
        if not session_has_second_factor(request):
            # The second-factor page explains why it was sent there (?for=support).
            return redirect(reverse("console:account-mfa") + "?for=support")
        return view(request, *args, **kwargs)

    return wrapper


@staff_with_second_factor
def support_overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = [
        {"health": health, "expiry": expiry_gauge(health.soonest_expiry, now=now)}
        for health in support.list_tenant_health()
    ]
    context = {
        "rows": rows,
        "events": support.list_recent_security_events(),
        "matrix": cross_tenant.health_matrix(now=now),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/support.html#health-matrix", context)
    return render(request, "console/support.html", context)


def _tenant_or_404(slug: str) -> tuple[UUID, str, str]:
    found = cross_tenant.get_tenant(slug=slug)
    if found is None:
        raise Http404("No such tenant")
    return found


def _staff(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@staff_with_second_factor
def support_incident(request: HttpRequest, key: str) -> HttpResponse:
    """One incident: the channels it covers and why; gone (404) once it has cleared."""
    matrix = cross_tenant.health_matrix()
    incident = next((i for i in matrix.incidents if i.key == key), None)
    if incident is None:
        return render(
            request,
            "console/404.html",
            {"what": "That incident has cleared: nothing matches it any more."},
            status=404,
        )
    return render(request, "console/support/incident.html", {"incident": incident})


@staff_with_second_factor
def support_tenant(request: HttpRequest, slug: str) -> HttpResponse:
    """One tenant's channels, latest messages (metadata only) and break-glass grants."""
    tenant_id, slug, name = _tenant_or_404(slug)
    channel_id = request.GET.get("channel", "")
    matrix = cross_tenant.health_matrix(tenant_id=tenant_id)
    context = {
        "tenant": {"id": tenant_id, "slug": slug, "name": name},
        "matrix": matrix,
        "channel_id": int(channel_id) if channel_id.isdigit() else None,
        "messages": cross_tenant.list_messages(
            tenant_id=tenant_id, channel_id=int(channel_id) if channel_id.isdigit() else None
        ),
        "grants": breakglass.list_grants(tenant_id=tenant_id),
        "active_grant": breakglass.active_grant(
            tenant_id=tenant_id, staff_user_id=_staff(request).pk
        ),
        "now": timezone.now(),
        "max_hours": int(breakglass.MAX_DURATION.total_seconds() // 3600),
    }
    return render(request, "console/support/tenant.html", context)


@staff_with_second_factor
def support_message(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """A message's metadata; its MPAN and payload only after a deliberate, audited read."""
    tenant_id, slug, name = _tenant_or_404(slug)
    message = cross_tenant.get_message(tenant_id=tenant_id, message_id=message_id)
    if message is None:
        raise Http404("No such message")
    content = None
    if request.method == "POST":
        try:
            content = breakglass.read_message_content(
                tenant_id=tenant_id,
                message_id=message_id,
                staff=_staff(request),
                source_address=request_source(request),
            )
        except breakglass.NoActiveGrant:
            messages.error(
                request,
                "No active break-glass grant for this tenant: open one (with a reason) first.",
            )
            return redirect("console:support-message", slug=slug, message_id=message_id)
    context = {
        "tenant": {"id": tenant_id, "slug": slug, "name": name},
        "message": message,
        "content": content,
        "payload_text": content.payload.decode("utf-8", "replace")
        if content and content.payload
        else "",
        "active_grant": breakglass.active_grant(
            tenant_id=tenant_id, staff_user_id=_staff(request).pk
        ),
    }
    return render(request, "console/support/message.html", context)


@require_POST
@staff_with_second_factor
def support_break_glass(request: HttpRequest, slug: str) -> HttpResponse:
    """Open a break-glass grant on the tenant for the signed-in staff member."""
    tenant_id, slug, _name = _tenant_or_404(slug)
    try:
        minutes = int(request.POST.get("minutes", "60"))
    except ValueError:
        minutes = -1
    try:
        grant = breakglass.grant_break_glass(
            tenant_id=tenant_id,
            staff=_staff(request),
            reason=request.POST.get("reason", ""),
            duration=timedelta(minutes=minutes),
            source_address=request_source(request),
        )
    except breakglass.BreakGlassError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"Break-glass open on {slug} until {grant.expires_at:%Y-%m-%d %H:%M} UTC. The tenant's"
            " admins were told, and every read you make is in their Activity log.",
        )
    target = request.POST.get("next", "")
    if target.startswith("/support/"):
        return redirect(target)
    return redirect("console:support-tenant", slug=slug)


@require_POST
@staff_with_second_factor
def support_break_glass_end(request: HttpRequest, slug: str, grant_id: int) -> HttpResponse:
    tenant_id, slug, _name = _tenant_or_404(slug)
    staff = _staff(request)
    try:
        breakglass.end_break_glass(
            tenant_id=tenant_id,
            grant_id=grant_id,
            ended_by=f"support:{staff.get_username()}",
            actor_user_id=staff.pk,
            source_address=request_source(request),
        )
    except BreakGlassGrant.DoesNotExist as missing:
        raise Http404("No such grant") from missing
    except breakglass.BreakGlassError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Break-glass ended: content is closed again.")
    return redirect("console:support-tenant", slug=slug)
