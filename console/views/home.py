"""The console's home page and the shells of the areas that later work fills."""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from messaging.health import get_tenant_health
from tenants import selectors
from tenants.authentication import in_staff_role
from tenants.models import StaffRole


def signed_in_user(request: HttpRequest) -> User:
    """The signed-in user, for views behind login_required."""
    assert isinstance(request.user, User), "this view needs a signed-in user"
    return request.user


def tenant_required(view: Any) -> Any:
    """A signed-in user acting for a tenant; with several tenants and none chosen, ask which."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.tenant is None:  # type: ignore[attr-defined]
            if not request.memberships and selectors.list_invitations_for_user(  # type: ignore[attr-defined]
                user=signed_in_user(request)
            ):
                return redirect("console:invitations")  # someone new: their way in
            status = 200 if request.memberships else 403  # type: ignore[attr-defined]
            return render(request, "console/choose_tenant.html", status=status)
        return view(request, *args, **kwargs)

    return wrapper


def home(request: HttpRequest) -> HttpResponse:
    """The landing page: a tenant's overview, or Support for provider staff who act for none."""
    if (
        request.user.is_authenticated
        and request.tenant is None  # type: ignore[attr-defined]
        and not request.memberships  # type: ignore[attr-defined]
        and in_staff_role(request, StaffRole.PROVIDER_SUPPORT, StaffRole.PROVIDER_ADMIN)
    ):
        return redirect("console:support")
    return tenant_overview(request)


@tenant_required
def tenant_overview(request: HttpRequest) -> HttpResponse:
    """The tenant overview: every flow's health at a glance, refreshed in place by htmx."""
    context = {
        "health": get_tenant_health(now=timezone.now()),
        "identities": selectors.list_identities(),
        "notifications": selectors.list_notifications(membership=request.membership, limit=5),  # type: ignore[attr-defined]
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/home.html#overview", context)
    return render(request, "console/home.html", context)


@tenant_required
def flows(request: HttpRequest) -> HttpResponse:
    """Every flow with its figures and the reasons for its status (the overview's long form)."""
    context = {"health": get_tenant_health(now=timezone.now())}
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/flows.html#flow-table", context)
    return render(request, "console/flows.html", context)
