"""A person's pending invitations to tenants: joining one is always their own choice."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.views.home import signed_in_user
from tenants import selectors, services


@login_required
def invitations(request: HttpRequest) -> HttpResponse:
    found = selectors.list_invitations_for_user(user=signed_in_user(request))
    return render(request, "console/invitations.html", {"invitations": found})


@login_required
@require_POST
def invitation_accept(request: HttpRequest, invitation_id: int) -> HttpResponse:
    try:
        membership = services.accept_invitation(
            user=signed_in_user(request), invitation_id=invitation_id
        )
    except ValidationError as exc:
        return render(request, "console/404.html", {"what": "; ".join(exc.messages)}, status=404)
    messages.success(request, "Invitation accepted: choose the tenant to act for from the top bar.")
    request.session[selectors.SESSION_TENANT_KEY] = str(membership.tenant_id)
    return redirect("console:home")


@login_required
@require_POST
def invitation_decline(request: HttpRequest, invitation_id: int) -> HttpResponse:
    try:
        services.decline_invitation(user=signed_in_user(request), invitation_id=invitation_id)
    except ValidationError as exc:
        return render(request, "console/404.html", {"what": "; ".join(exc.messages)}, status=404)
    messages.info(request, "Invitation declined.")
    return redirect("console:invitations")
