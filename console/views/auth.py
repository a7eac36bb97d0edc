"""Sign-in, sign-out and choosing which tenant to act for."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.models import Device

from console.throttle import count_failure, is_throttled
from core.audit import record_event, request_source
from core.models import RecoveryCodes, TemporaryPassword
from tenants.selectors import (
    SESSION_ACTED_FOR_KEY,
    SESSION_PASSWORD_CHANGE_KEY,
    SESSION_TENANT_KEY,
)
from tenants.tasks import send_account_change_email_task

MFA_PENDING_KEY = "busbar_mfa_pending"


def _security_event(
    request: HttpRequest, action: str, *, username: str, detail: dict | None = None
) -> None:
    """Record a sign-in event as the person's own, not any tenant's: tenant-less, with their user
    id when the name is an account's. They see it on their account page and provider support sees
    it; a tenant sees a sign-in only when the person goes on to act for it (TenantMiddleware).
    Belonging to a tenant, which another tenant's admin cannot arrange without the person's
    acceptance anyway, does not show that tenant the person's sign-ins elsewhere."""
    user = get_user_model().objects.filter(username=username).first() if username else None
    record_event(
        action=action,
        actor=username or "anonymous",
        actor_user_id=user.pk if user else None,
        category="security",
        source_address=request_source(request),
        detail=detail,
    )


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Django's authentication form, refusing further tries after repeated failures."""
    if request.user.is_authenticated:
        return redirect("console:home")
    form = AuthenticationForm(request, data=request.POST or None)
    throttled = False
    if request.method == "POST":
        username = request.POST.get("username", "")
        if is_throttled(request, username):
            throttled = True
            form.errors.clear()
            _security_event(request, "login.throttled", username=username)
        elif form.is_valid():
            user = form.get_user()
            target = request.GET.get("next", "")
            if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
                target = reverse("console:home")
            if user_has_device(user):
                # The password was right; the session is not signed in until the second factor is.
                request.session[MFA_PENDING_KEY] = {
                    "user_id": user.pk,
                    "backend": user.backend,
                    "next": target,
                    "since": time.time(),
                }
                return redirect("console:login-verify")
            _complete_login(request, user, device=None)
            return HttpResponseRedirect(target)
        else:
            count_failure(request, username)
            _security_event(request, "login.failed", username=username)
    status = 429 if throttled else 200
    return render(
        request, "console/login.html", {"form": form, "throttled": throttled}, status=status
    )


def _complete_login(request: HttpRequest, user: User, *, device: Device | None) -> None:
    login(request, user)
    if device is not None:
        otp_login(request, device)
    request.session.pop(SESSION_TENANT_KEY, None)
    request.session.pop(SESSION_ACTED_FOR_KEY, None)
    if TemporaryPassword.objects.filter(user=user).exists():
        request.session[SESSION_PASSWORD_CHANGE_KEY] = True
    _security_event(
        request,
        "login.succeeded",
        username=user.get_username(),
        detail={"second_factor": device is not None},
    )
    if isinstance(device, RecoveryCodes):
        _security_event(
            request,
            "recovery_code.used",
            username=user.get_username(),
            detail={"codes_left": len(device.code_hashes)},
        )
        send_account_change_email_task.delay_on_commit(
            user.pk, "recovery_code.used", request_source(request)
        )


@require_http_methods(["GET", "POST"])
def login_verify(request: HttpRequest) -> HttpResponse:
    """The second step of a sign-in for users with an authenticator app."""
    pending = request.session.get(MFA_PENDING_KEY)
    if not pending or time.time() - pending["since"] > settings.MFA_PENDING_SECONDS:
        request.session.pop(MFA_PENDING_KEY, None)
        messages.error(request, "Sign in again: the second step was not completed in time.")
        return redirect("console:login")
    user = get_user_model().objects.get(pk=pending["user_id"])
    user.backend = pending["backend"]
    error = ""
    status = 200
    if request.method == "POST":
        token = request.POST.get("token", "").replace(" ", "")
        if is_throttled(request, user.get_username()):
            error, status = "Too many failed attempts. Wait a few minutes before trying again.", 429
        else:
            device = match_token(user, token)
            if device is not None:
                request.session.pop(MFA_PENDING_KEY, None)
                _complete_login(request, user, device=device)
                return HttpResponseRedirect(pending["next"])
            count_failure(request, user.get_username())
            _security_event(request, "login.second_factor_failed", username=user.get_username())
            error = (
                "That code is not valid. Use the current code from your authenticator app,"
                " or one of your recovery codes."
            )
    return render(request, "console/login_verify.html", {"error": error}, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        _security_event(request, "logout", username=request.user.get_username())
    logout(request)
    return redirect("console:login")


@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Act for another tenant the user belongs to; anything else is refused as not found."""
    if not request.user.is_authenticated:
        return redirect("console:login")
    wanted = request.POST.get("tenant_id", "")
    membership = next((m for m in request.memberships if str(m.tenant_id) == wanted), None)  # type: ignore[attr-defined]
    if membership is None:
        return render(request, "console/404.html", status=404)
    request.session[SESSION_TENANT_KEY] = str(membership.tenant_id)
    messages.info(request, f"Now acting for {membership.tenant.name}.")
    return redirect("console:home")
