"""Settings: the tenant's DIP set-up for everyone; members and API keys for tenant admins."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from console.forms import ApiCredentialForm, MemberForm, RolesForm
from console.views import webhooks
from console.views.home import signed_in_user, tenant_required
from tenants import selectors, services
from tenants.models import Role


def _is_tenant_admin(request: HttpRequest) -> bool:
    return selectors.user_has_role(request.membership, Role.TENANT_ADMIN)  # type: ignore[attr-defined]


def tenant_admin_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """POST by a tenant admin; anyone else gets the 403 page."""

    @tenant_required
    @require_POST
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _is_tenant_admin(request):
            return render(request, "console/403.html", {"need": "tenant admin"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def _errors(exc: ValidationError) -> str:
    return "; ".join(exc.messages)


@tenant_required
def settings_page(request: HttpRequest) -> HttpResponse:
    """Identities, connections and channels; members and API keys for tenant admins only."""
    admin = _is_tenant_admin(request)
    context = {
        "identities": selectors.list_identities(),
        "connections": selectors.list_connections(),
        "channels": selectors.list_channels(),
        "is_tenant_admin": admin,
        "api_credentials": selectors.list_api_credentials() if admin else None,
        "members": selectors.list_members() if admin else None,
        "api_key_form": ApiCredentialForm() if admin else None,
        "member_form": MemberForm() if admin else None,
        "roles": Role.choices,
        "webhooks": webhooks.webhook_rows(),
        "may_register_webhooks": webhooks.may_register(request),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/settings.html#channel-table", context)
    return render(request, "console/settings.html", context)


@tenant_admin_only
@never_cache
def api_key_issue(request: HttpRequest) -> HttpResponse:
    """Issue a key and show it this once (the page is not cached and the key is not stored)."""
    form = ApiCredentialForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The API key was not issued: " + form.errors.as_text())
        return redirect("console:settings")
    try:
        issued = services.issue_api_credential(
            **form.cleaned_data,
            created_by=signed_in_user(request),
            actor=request.user.get_username(),
        )
    except ValidationError as exc:
        messages.error(request, "The API key was not issued: " + _errors(exc))
        return redirect("console:settings")
    return render(request, "console/api_key_issued.html", {"issued": issued})


@tenant_admin_only
def second_factor_policy(request: HttpRequest) -> HttpResponse:
    required = request.POST.get("required") == "on"
    services.set_second_factor_policy(
        tenant=request.tenant,  # type: ignore[attr-defined]
        required=required,
        actor=request.user.get_username(),
    )
    messages.success(
        request,
        "Members now need an authenticator app to act here."
        if required
        else "An authenticator app is now each member's choice.",
    )
    return redirect("console:settings")


@tenant_admin_only
def api_key_revoke(request: HttpRequest, credential_id: int) -> HttpResponse:
    credential = selectors.get_api_credential(credential_id=credential_id)
    services.revoke_api_credential(credential=credential, actor=request.user.get_username())
    messages.success(request, f"API key {credential.prefix} revoked: it is refused from now on.")
    return redirect("console:settings")


@tenant_admin_only
@never_cache
def member_add(request: HttpRequest) -> HttpResponse:
    """Add an existing account to the tenant, or create one with a temporary password that is
    shown to the admin once (to hand over out of band)."""
    form = MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nobody was added: " + form.errors.as_text())
        return redirect("console:settings")
    data = form.cleaned_data
    actor = request.user.get_username()
    temporary_password = ""
    try:
        with transaction.atomic():
            user = get_user_model().objects.filter(username=data["username"]).first()
            if user is None:
                if not data["email"]:
                    raise ValidationError("a new account needs an email address")
                temporary_password = secrets.token_urlsafe(15)
                user = services.create_user(
                    username=data["username"],
                    email=data["email"],
                    password=temporary_password,
                    roles=data["roles"],
                    actor=actor,
                )
            else:
                services.add_member(user=user, roles=data["roles"], actor=actor)
    except ValidationError as exc:
        messages.error(request, "Nobody was added: " + _errors(exc))
        return redirect("console:settings")
    if temporary_password:
        return render(
            request,
            "console/member_added.html",
            {"member": user, "temporary_password": temporary_password},
        )
    messages.success(request, f"{user.get_username()} is now a member.")
    return redirect("console:settings")


@tenant_admin_only
def member_roles(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = selectors.get_member(membership_id=membership_id)
    form = RolesForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.as_text())
        services.add_member(
            user=membership.user,
            roles=form.cleaned_data["roles"],
            actor=request.user.get_username(),
        )
    except ValidationError as exc:
        messages.error(request, "Roles unchanged: " + _errors(exc))
    else:
        messages.success(request, f"Roles of {membership.user.get_username()} updated.")
    return redirect("console:settings")


@tenant_admin_only
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = selectors.get_member(membership_id=membership_id)
    try:
        services.remove_member(membership=membership, actor=request.user.get_username())
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    else:
        messages.success(request, f"{membership.user.get_username()} removed from this tenant.")
    return redirect("console:settings")
