"""A person's own security settings: password, the authenticator app that is their second factor,
its recovery codes, and the sign-in events of their account."""

from __future__ import annotations

import io
import time
from base64 import b32encode
from uuid import UUID

import segno
from django.contrib import messages
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login

from console.views.home import signed_in_user
from core.audit import record_event, request_source
from core.models import AuditEvent, RecoveryCodes, TemporaryPassword, TOTPSecondFactor
from tenants import enrolment
from tenants.selectors import SESSION_PASSWORD_CHANGE_KEY, tenant_requires_second_factor_for
from tenants.tasks import send_account_change_email_task

ENROLMENT_GRANT_KEY = "busbar_enrolment_grant"


def _audit(request: HttpRequest, action: str) -> None:
    """A change to the person's own account: recorded (in the tenant they act for, if any, else
    as theirs alone) and emailed to them, so a change they did not make does not go unnoticed."""
    source = request_source(request)
    record_event(
        action=action,
        actor=request.user.get_username(),
        actor_user_id=request.user.pk,
        category="security",
        source_address=source,
    )
    send_account_change_email_task.delay_on_commit(request.user.pk, action, source)


def _enrolment_grant(request: HttpRequest) -> dict | None:
    grant = request.session.get(ENROLMENT_GRANT_KEY)
    if grant and grant.get("user_id") == request.user.pk:
        return grant
    return None


def enrolment_needs_a_link(request: HttpRequest) -> bool:
    """Whether setting up a second factor here needs an admin's enrolment link: yes when any
    tenant the person belongs to requires one (a password alone must not satisfy it)."""
    return tenant_requires_second_factor_for(memberships=request.memberships)  # type: ignore[attr-defined]


def _show_recovery_codes(request: HttpRequest, codes: list[str], *, heading: str) -> HttpResponse:
    return render(
        request, "console/account/recovery_codes.html", {"codes": codes, "heading": heading}
    )


def authenticator_qr_svg(config_url: str) -> str:
    """The otpauth:// URL as an inline SVG QR code that scales to its box.

    django-otp's writer gives the SVG a fixed width and height of one unit per module and no
    viewBox, so CSS sizing shrank the code to about 40 px inside its 200 px box, too small for a
    phone to scan. A viewBox with no size lets it fill the box; the four-module quiet zone is the
    QR standard's, which scanners need.
    """
    out = io.BytesIO()
    segno.make(config_url, error="m").save(
        out, kind="svg", omitsize=True, xmldecl=False, border=4, title="Authenticator set-up code"
    )
    return out.getvalue().decode()


@login_required
@require_http_methods(["GET", "POST"])
def second_factor(request: HttpRequest) -> HttpResponse:
    """Set up (scan, then confirm with a code) or remove the user's authenticator app, and make
    new recovery codes.

    Removing the app or replacing the codes needs a current code, so a session left open cannot
    do either. Where a tenant requires a second factor, setting one up needs an enrolment link.
    """
    user = signed_in_user(request)
    confirmed = TOTPSecondFactor.objects.filter(user=user, confirmed=True).first()
    # RLS shows the person's own tenant-less events (sign-ins) and, when acting for a tenant,
    # what they did there.
    own_events = AuditEvent.objects.filter(actor_user_id=user.pk).order_by("-occurred_at")[:20]
    if confirmed is not None:
        action = request.POST.get("action") if request.method == "POST" else None
        token = request.POST.get("token", "").replace(" ", "")
        if action in {"remove", "recovery-codes"}:
            if not confirmed.verify_token(token):
                kept = "the authenticator app stays" if action == "remove" else "no new codes"
                messages.error(request, f"That code is not valid; {kept}.")
            elif action == "remove":
                TOTPSecondFactor.objects.filter(user=user).delete()
                RecoveryCodes.objects.filter(user=user).delete()
                _audit(request, "mfa.removed")
                messages.success(request, "Authenticator app removed.")
                return redirect("console:account-mfa")
            else:
                codes = enrolment.make_recovery_codes(user=user)
                _audit(request, "recovery_codes.regenerated")
                return _show_recovery_codes(request, codes, heading="New recovery codes")
        recovery = RecoveryCodes.objects.filter(user=user).first()
        context = {
            "confirmed": confirmed,
            "codes_left": len(recovery.code_hashes) if recovery else 0,
            "own_events": own_events,
        }
        return render(request, "console/account/mfa.html", context)

    grant = _enrolment_grant(request)
    if enrolment_needs_a_link(request) and grant is None:
        return render(
            request,
            "console/account/mfa.html",
            {"needs_link": True, "own_events": own_events},
            status=403,
        )
    pending = TOTPSecondFactor.objects.filter(user=user, confirmed=False).first()
    if pending is None:
        pending = TOTPSecondFactor.new_for(user)
        pending.save()
    if request.method == "POST":
        if pending.verify_token(request.POST.get("token", "").replace(" ", "")):
            if grant is not None and not enrolment.use_enrolment_link(
                tenant_id=grant["tenant_id"], link_id=grant["link_id"], user=user
            ):
                request.session.pop(ENROLMENT_GRANT_KEY, None)
                messages.error(request, "That enrolment link has expired or was already used.")
                return redirect("console:account-mfa")
            request.session.pop(ENROLMENT_GRANT_KEY, None)
            pending.confirmed = True
            pending.save(update_fields=["confirmed"])
            otp_login(request, pending)
            _audit(request, "mfa.enabled")
            codes = enrolment.make_recovery_codes(user=user)
            messages.success(request, "Authenticator app set up: sign-ins now ask for a code.")
            return _show_recovery_codes(request, codes, heading="Your recovery codes")
        messages.error(
            request, "That code is not valid. Check the app's clock and try the current code."
        )
    context = {
        "qr_svg": authenticator_qr_svg(pending.config_url),
        "secret": b32encode(pending.bin_key).decode(),
        "own_events": own_events,
    }
    return render(request, "console/account/mfa.html", context)


@login_required
@require_http_methods(["GET"])
def second_factor_enrol(request: HttpRequest, tenant_id: UUID, token: str) -> HttpResponse:
    """Open an enrolment link: for the signed-in person it was made for, in a tenant they belong
    to, unused and unexpired; it then lets this session set up an authenticator app."""
    user = signed_in_user(request)
    member_of = {m.tenant_id for m in request.memberships}  # type: ignore[attr-defined]
    link_id = (
        enrolment.find_enrolment_link(tenant_id=tenant_id, user=user, token=token)
        if tenant_id in member_of
        else None
    )
    if link_id is None:
        return render(
            request,
            "console/404.html",
            {"what": "This enrolment link is not valid: it may have expired or been used."},
            status=404,
        )
    request.session[ENROLMENT_GRANT_KEY] = {
        "user_id": user.pk,
        "tenant_id": str(tenant_id),
        "link_id": link_id,
        "since": time.time(),
    }
    return redirect("console:account-mfa")


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    """Change one's own password (one someone else set must be changed before anything else)."""
    user = signed_in_user(request)
    form = PasswordChangeForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        if form.cleaned_data["new_password1"] == form.cleaned_data["old_password"]:
            form.add_error("new_password1", "Choose a password different from the current one.")
        else:
            user = form.save()
            update_session_auth_hash(request, user)  # stay signed in on this session
            TemporaryPassword.objects.filter(user=user).delete()
            request.session.pop(SESSION_PASSWORD_CHANGE_KEY, None)
            _audit(request, "password.changed")
            messages.success(request, "Password changed.")
            return redirect("console:home")
    required = bool(request.session.get(SESSION_PASSWORD_CHANGE_KEY))
    return render(request, "console/account/password.html", {"form": form, "required": required})


@require_http_methods(["GET", "POST"])
def set_password(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """Choose the first password of an invited new account, from the link in its invitation
    email (Django's token: it works until the password is set, then never again)."""
    try:
        user = get_user_model().objects.get(pk=int(force_str(urlsafe_base64_decode(uidb64))))
    except (ValueError, TypeError, OverflowError, get_user_model().DoesNotExist):
        user = None
    if user is None or not default_token_generator.check_token(user, token):
        return render(
            request,
            "console/404.html",
            {"what": "This link is not valid: it may have expired or been used."},
            status=404,
        )
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        TemporaryPassword.objects.filter(user=user).delete()
        record_event(
            action="password.set",
            actor=user.get_username(),
            actor_user_id=user.pk,
            category="security",
            source_address=request_source(request),
        )
        messages.success(request, "Password set: sign in with it now.")
        return redirect("console:login")
    return render(request, "console/account/set_password.html", {"form": form, "person": user})
