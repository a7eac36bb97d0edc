"""DIP webhooks on the Settings page: where the DIP pushes each channel, when that was last
registered and with what answer, and a Register button for tenant and certificate admins (the
registration itself runs in a worker: the DIP is never called inside a web request)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.views.home import tenant_required
from messaging.inbound import registration
from tenants import selectors
from tenants.certificates import CertificateError
from tenants.models import Role

REGISTER_ROLES = (Role.TENANT_ADMIN, Role.CERTIFICATE_ADMIN)


def may_register(request: HttpRequest) -> bool:
    return selectors.user_has_role(request.membership, *REGISTER_ROLES)  # type: ignore[attr-defined]


def webhook_rows() -> list[dict[str, Any]]:
    """Per connection: each inbound channel and the status webhook, with the last answer."""
    rows = []
    for connection in selectors.list_connections():
        latest = registration.last_registrations(connection=connection)
        targets = [c.interface_id for c in registration.inbound_channels(connection=connection)]
        rows.append(
            {
                "connection": connection,
                "targets": [(t, latest.get(t)) for t in [*targets, "status"]],
            }
        )
    return rows


@tenant_required
@require_POST
def webhook_register(request: HttpRequest, connection_id: int) -> HttpResponse:
    if not may_register(request):
        return render(
            request, "console/403.html", {"need": "tenant or certificate admin"}, status=403
        )
    connection = selectors.get_connection(connection_id=connection_id)
    try:
        registration.request_webhook_registration(
            connection=connection, actor=request.user.get_username()
        )
    except (CertificateError, registration.RegistrationError) as exc:
        messages.error(request, f"Webhooks not registered: {exc}")
        return redirect("console:settings")
    messages.success(
        request,
        f"Registering the webhooks of {connection} with the DIP; refresh to see the answers.",
    )
    return redirect("console:settings")
