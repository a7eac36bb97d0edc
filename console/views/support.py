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
from tenants.models import StaffRole


def staff_with_second_factor(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Busbar's support and admin staff only (others: 404), and only with a verified second
    factor (others are sent to set one up)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        roles = [StaffRole.PROVIDER_SUPPORT, StaffRole.PROVIDER_ADMIN]
        if not (user.is_staff and user.groups.filter(name__in=roles).exists()):
            raise Http404("No such page")
        # django-otp's middleware gives the user is_verified(); without it, nobody is verified.
        if not getattr(user, "is_verified", lambda: False)():
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
