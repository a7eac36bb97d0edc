"""Settings: the tenant's DIP set-up for everyone; members and API keys for tenant admins."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from console.forms import ApiCredentialForm, MemberForm, RolesForm
from console.views import webhooks
from console.views.home import signed_in_user, tenant_required
from tenants import selectors, services
from tenants.authentication import session_has_second_factor
from tenants.models import Role
from tenants.tasks import send_enrolment_link_task


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
        "invitations": selectors.list_pending_invitations() if admin else None,
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
    if required and not session_has_second_factor(request):
        # Otherwise the admin would be sent to set one up, which under the requirement needs an
        # enrolment link: only Settings can send one, and they could no longer reach it.
        messages.error(
            request,
            "Set up your own authenticator app and sign in with it before requiring one of"
            " every member.",
        )
        return redirect("console:settings")
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
def member_add(request: HttpRequest) -> HttpResponse:
    """Invite a person by username. The answer is the same whether the name is new or belongs to
    someone already (here, in another tenant, or at Busbar), so it reveals no one's account."""
    form = MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nobody was invited: " + form.errors.as_text())
        return redirect("console:settings")
    data = form.cleaned_data
    try:
        services.invite_member(
            username=data["username"],
            email=data["email"],
            roles=data["roles"],
            actor=request.user.get_username(),
        )
    except ValidationError as exc:
        messages.error(request, "Nobody was invited: " + _errors(exc))
        return redirect("console:settings")
    messages.success(
        request,
        f"{data['username']} is invited. They join once they accept, after signing in; a new"
        " account's invitation, with a link to choose its password, goes to the email address"
        " given.",
    )
    return redirect("console:settings")


@tenant_admin_only
def member_enrolment_link(request: HttpRequest, membership_id: int) -> HttpResponse:
    """Email a member a one-time link to set up their second factor (the tenant's requirement
    cannot be met with a password alone)."""
    membership = selectors.get_member(membership_id=membership_id)
    send_enrolment_link_task.delay_on_commit(
        str(membership.tenant_id), membership.user_id, request.user.get_username()
    )
    messages.success(
        request,
        f"An enrolment link is on its way to {membership.user.get_username()}'s email address.",
    )
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
