"""A person's own security settings: the authenticator app that is their second factor."""

from __future__ import annotations

import io
from base64 import b32encode

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.qr import write_qrcode_image

from console.views.home import signed_in_user
from core.audit import record_event, request_source
from core.models import TOTPSecondFactor


def _audit(request: HttpRequest, action: str) -> None:
    record_event(
        action=action,
        actor=request.user.get_username(),
        actor_user_id=request.user.pk,
        category="security",
        source_address=request_source(request),
    )


@login_required
@require_http_methods(["GET", "POST"])
def second_factor(request: HttpRequest) -> HttpResponse:
    """Set up (scan, then confirm with a code) or remove the user's authenticator app.

    Removing one needs a current code, so a session left open cannot turn the factor off.
    """
    confirmed = TOTPSecondFactor.objects.filter(user=request.user, confirmed=True).first()
    if confirmed is not None:
        if request.method == "POST" and request.POST.get("action") == "remove":
            if confirmed.verify_token(request.POST.get("token", "").replace(" ", "")):
                TOTPSecondFactor.objects.filter(user=request.user).delete()
                _audit(request, "mfa.removed")
                messages.success(request, "Authenticator app removed.")
                return redirect("console:account-mfa")
            messages.error(request, "That code is not valid; the authenticator app stays.")
        return render(request, "console/account/mfa.html", {"confirmed": confirmed})

    pending = TOTPSecondFactor.objects.filter(user=request.user, confirmed=False).first()
    if pending is None:
        pending = TOTPSecondFactor.new_for(request.user)
        pending.save()
    if request.method == "POST":
        if pending.verify_token(request.POST.get("token", "").replace(" ", "")):
            pending.confirmed = True
            pending.save(update_fields=["confirmed"])
            otp_login(request, pending)
            _audit(request, "mfa.enabled")
            messages.success(request, "Authenticator app set up: sign-ins now ask for a code.")
            return redirect("console:account-mfa")
        messages.error(
            request, "That code is not valid. Check the app's clock and try the current code."
        )
    svg = io.BytesIO()
    write_qrcode_image(pending.config_url, svg)
    context = {
        "qr_svg": svg.getvalue().decode(),
        "secret": b32encode(pending.bin_key).decode(),
    }
    return render(request, "console/account/mfa.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    """Change one's own password (the temporary one an admin handed over, say)."""
    form = PasswordChangeForm(signed_in_user(request), request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)  # stay signed in on this session
        _audit(request, "password.changed")
        messages.success(request, "Password changed.")
        return redirect("console:home")
    return render(request, "console/account/password.html", {"form": form})
