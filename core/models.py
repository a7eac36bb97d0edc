"""Core models: the append-only audit log, the encrypted second factor and its recovery codes."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.plugins.otp_totp.models import TOTPDevice

from core import crypto


class AuditEvent(models.Model):
    """One user action or security event. Append-only: the runtime role may only insert and read,
    and a trigger refuses UPDATE and DELETE for everyone outside a retention purge.

    ``tenant_id`` is null for events that belong to no tenant yet (a webhook for an unknown channel,
    a failed login for an unknown user); only provider support sees those.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant_id = models.UUIDField(null=True, blank=True, db_index=False)
    occurred_at = models.DateTimeField(auto_now_add=True)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(
        max_length=200, help_text="who acted: a username, api:<key prefix>, system"
    )
    action = models.CharField(max_length=100, help_text="dotted verb, e.g. tenant.created")
    category = models.CharField(
        max_length=20,
        choices=[("activity", "User activity"), ("security", "Security event")],
        default="activity",
    )
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    source_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant_id", "occurred_at"], name="audit_tenant_time")]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"


class TOTPSecondFactor(TimestampMixin, ThrottlingMixin, Device):
    """An authenticator-app second factor (RFC 6238 TOTP) whose seed is envelope-encrypted.

    django-otp's own TOTPDevice keeps the seed in clear hex; this one stores it as core.crypto
    does every secret, and borrows TOTPDevice's verification, throttling and otpauth URL code,
    which only reach the seed through ``bin_key``.
    """

    key_encrypted = models.TextField(editable=False)
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):
        verbose_name = "authenticator app"

    @classmethod
    def new_for(cls, user: object) -> TOTPSecondFactor:
        """An unconfirmed device with a fresh 160-bit seed (confirmed once a token checks)."""
        device = cls(user=user, name="Authenticator app", confirmed=False)
        device.key_encrypted = crypto.encrypt(os.urandom(20), context=device.key_context)
        return device

    @property
    def key_context(self) -> str:
        return f"user:{self.user_id}:totp"

    @property
    def bin_key(self) -> bytes:
        return crypto.decrypt(self.key_encrypted, context=self.key_context)

    def verify_token(self, token: object) -> bool:
        # Only something shaped like a code counts as a failed try: a recovery code given at the
        # same prompt must not push the app's throttle up and lock out the next real code.
        if not (isinstance(token, str) and token.isdigit() and len(token) == self.digits):
            return False
        return TOTPDevice.verify_token(self, token)

    get_throttle_factor = TOTPDevice.get_throttle_factor
    config_url = TOTPDevice.config_url
    _read_str_from_settings = TOTPDevice._read_str_from_settings


def hash_recovery_code(code: str) -> str:
    """SHA-256 of a normalised code. A code carries 80 random bits, so a fast hash is enough:
    nobody can search that space, and signing in stays quick."""
    normalised = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(normalised.encode()).hexdigest()


class RecoveryCodes(Device):
    """One-time recovery codes, made when an authenticator app is set up and shown once.

    A django-otp device, so the sign-in's second step accepts a code like an app's; each code
    works once (its hash is removed) and only hashes are stored.
    """

    code_hashes = ArrayField(models.CharField(max_length=64), default=list)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(Device.Meta):
        verbose_name = "recovery codes"

    def verify_token(self, token: object) -> bool:
        if not isinstance(token, str) or not token.strip():
            return False
        wanted = hash_recovery_code(token)
        # Row lock: two sign-ins racing with one code must not both succeed.
        with transaction.atomic():
            locked = type(self).objects.select_for_update().get(pk=self.pk)
            remaining = [h for h in locked.code_hashes if not hmac.compare_digest(h, wanted)]
            if len(remaining) == len(locked.code_hashes):
                return False
            locked.code_hashes = remaining
            locked.save(update_fields=["code_hashes"])
        self.code_hashes = remaining
        return True


class TemporaryPassword(models.Model):
    """The account's password was set by someone else (onboarding, an admin): until its owner
    changes it, a session may do nothing else."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="temporary_password",
    )
    issued_by = models.CharField(max_length=200)
    issued_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"temporary password of user {self.user_id}"
