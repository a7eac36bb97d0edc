"""Emails to a person about their own account: invitations, enrolment links, security changes.

Sent from workers (tenants.tasks), never inside a web request; each task takes ids and builds
the message itself, so no secret (a set-password or enrolment link) ever passes through the broker.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from tenants.models import Invitation, Role


def absolute(path: str) -> str:
    return settings.BUSBAR_PUBLIC_URL.rstrip("/") + path


def set_password_link(user: User) -> str:
    """A link to choose a password, valid once and for PASSWORD_RESET_TIMEOUT (Django's token:
    it stops working as soon as the password changes)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return absolute(reverse("console:set-password", kwargs={"uidb64": uid, "token": token}))


def send_to(user: User, subject: str, body: str) -> bool:
    if not user.email:
        return False
    send_mail(f"[Busbar] {subject}", body, settings.DEFAULT_FROM_EMAIL, [user.email])
    return True


def send_invitation(invitation: Invitation) -> bool:
    user = invitation.user
    roles = ", ".join(Role(r).label for r in invitation.roles if r in Role.values)
    lines = [
        f"{invitation.invited_by} invited you to act for {invitation.tenant_name} on Busbar"
        f" ({roles}).",
        "",
    ]
    if not user.has_usable_password():
        lines += [
            f"Your account is new: its username is {user.get_username()}. Choose its password"
            " here first (the link works once):",
            set_password_link(user),
            "",
        ]
    lines += [
        f"Then sign in and accept or decline the invitation: {absolute(reverse('console:invitations'))}",
        f"It expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
        "If you did not expect this, decline it or ignore this email.",
    ]
    return send_to(user, f"Invitation to {invitation.tenant_name}", "\n".join(lines))


def send_enrolment_link(user: User, *, tenant_name: str, link: str, expires_hours: int) -> bool:
    body = "\n".join(
        [
            f"{tenant_name} requires an authenticator app (second factor) to act for it on Busbar.",
            "Sign in, then open this link to set one up. It works once, for your account only,"
            f" for {expires_hours} hours:",
            link,
            "",
            "If you did not expect this, tell your tenant admin.",
        ]
    )
    return send_to(user, "Set up your second factor", body)


ACCOUNT_CHANGES = {
    "mfa.enabled": "An authenticator app was set up as your second factor.",
    "mfa.removed": "Your authenticator app (second factor) was removed.",
    "recovery_codes.regenerated": "New recovery codes were made; the old ones no longer work.",
    "recovery_code.used": "A recovery code was used to sign in.",
    "password.changed": "Your password was changed.",
}


def send_account_change(user: User, *, action: str, source_address: str | None) -> bool:
    body = "\n".join(
        [
            ACCOUNT_CHANGES[action],
            f"Account: {user.get_username()}",
            f"From address: {source_address or 'unknown'}",
            "",
            "If this was not you, tell your tenant admin or Busbar support at once.",
        ]
    )
    return send_to(user, "Security change to your account", body)
