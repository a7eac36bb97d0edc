"""Provider support's console page: every tenant's health at a glance, no content."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from console.expiry import expiry_gauge
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
            messages.info(
                request, "Support pages need a second factor: set one up, then sign in again."
            )
            return redirect("console:account-mfa")
        return view(request, *args, **kwargs)

    return wrapper


@staff_with_second_factor
def support_overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = [
        {"health": health, "expiry": expiry_gauge(health.soonest_expiry, now=now)}
        for health in support.list_tenant_health()
    ]
    context = {"rows": rows, "events": support.list_recent_security_events()}
    return render(request, "console/support.html", context)
