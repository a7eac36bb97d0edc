"""Downstream: the tenant's systems that receive events by signed webhook, and their health.

Every member sees the endpoints and how delivery to them goes; tenant admins add them, rotate
their signing secrets (the new secret is shown once) and disable or enable them.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from console.forms import DownstreamEndpointForm
from console.views.home import tenant_required
from console.views.settings import _is_tenant_admin, tenant_admin_only
from messaging.events import endpoints, selectors
from messaging.events.endpoints import IssuedSecret
from messaging.events.mappings import EventType

EVENT_TYPE_CHOICES = [("*", "Every type, now and later"), *EventType.LABELS.items()]


def _form(data: object = None) -> DownstreamEndpointForm:
    return DownstreamEndpointForm(data, event_types=EVENT_TYPE_CHOICES)


@tenant_required
def downstream(request: HttpRequest) -> HttpResponse:
    context = {
        "health": selectors.list_endpoint_health(),
        "is_tenant_admin": _is_tenant_admin(request),
        "form": _form() if _is_tenant_admin(request) else None,
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/downstream.html#endpoint-table", context)
    return render(request, "console/downstream.html", context)


def _secret_page(request: HttpRequest, issued: IssuedSecret, action: str) -> HttpResponse:
    return render(request, "console/downstream_secret.html", {"issued": issued, "action": action})


@tenant_admin_only
@never_cache
def endpoint_add(request: HttpRequest) -> HttpResponse:
    form = _form(request.POST)
    if not form.is_valid():
        messages.error(request, "The endpoint was not added: " + form.errors.as_text())
        return redirect("console:downstream")
    try:
        issued = endpoints.create_endpoint(**form.cleaned_data, actor=request.user.get_username())
    except ValidationError as exc:
        messages.error(request, "The endpoint was not added: " + "; ".join(exc.messages))
        return redirect("console:downstream")
    return _secret_page(request, issued, "added")


@tenant_admin_only
@never_cache
def endpoint_rotate(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = endpoints.get_endpoint(endpoint_id=endpoint_id)
    issued = endpoints.rotate_endpoint_secret(endpoint=endpoint, actor=request.user.get_username())
    return _secret_page(request, issued, "rotated")


@tenant_admin_only
def endpoint_enable(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = endpoints.get_endpoint(endpoint_id=endpoint_id)
    enabled = request.POST.get("enabled") == "1"
    endpoints.set_endpoint_enabled(
        endpoint=endpoint, enabled=enabled, actor=request.user.get_username()
    )
    messages.success(
        request,
        f"{endpoint.name} enabled: it receives the events that come from now on."
        if enabled
        else f"{endpoint.name} disabled: what it was still owed is cancelled (the API feed keeps every event).",
    )
    return redirect("console:downstream")
