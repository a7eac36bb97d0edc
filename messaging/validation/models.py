"""The schema registry (global tables: the DIP's specification is the same for every tenant) and
each tenant's validation settings (a tenant table under RLS)."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from tenants.models import Connection, TenantOwned


class SpecVersion(models.Model):
    """One imported DIP specification, under a name such as ``2.1.0``.

    Global: written only by ``manage.py import_dip_spec`` as the owner role; the runtime role may
    only read it (see the migration).
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=40, unique=True)
    api_version = models.CharField(max_length=20, blank=True, help_text="info.version of the API")
    source = models.CharField(max_length=500, help_text="the folder it was imported from")
    digest = models.CharField(max_length=64, help_text="sha256 over the specification's files")
    schema_count = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField(default=timezone.now)
    is_default = models.BooleanField(
        default=False, help_text="validates the tenants that are not pinned to a version"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_spec"
            )
        ]

    def __str__(self) -> str:
        return self.name


class SpecSchema(models.Model):
    """One resolved JSON schema of a spec version, for (interface, schema version, event code).

    ``event_code`` is empty when the interface has one schema for every event code.
    """

    id = models.BigAutoField(primary_key=True)
    spec = models.ForeignKey(SpecVersion, on_delete=models.CASCADE, related_name="schemas")
    interface_id = models.CharField(max_length=20)
    schema_version = models.CharField(max_length=10)
    event_code = models.CharField(max_length=60, blank=True)
    schema = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["spec", "interface_id", "schema_version", "event_code"],
                name="specschema_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.spec_id} {self.interface_id} {self.schema_version} {self.event_code}"


class MpanCheck(models.TextChoices):
    OFF = "off", "Not checked"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error (the message is invalid)"


class TenantValidationSettings(TenantOwned):
    """A tenant's validation settings: the spec version it is pinned to and its rules.

    ``spec_version`` empty means the default (the spec version marked default, else Busbar's
    built-in schemas). ``business_rules`` maps a rule id to ``{"enabled", "severity", "params"}``
    and overrides the defaults in ``messaging.validation.stages.BUSINESS_RULES``.
    """

    id = models.BigAutoField(primary_key=True)
    spec_version = models.CharField(max_length=40, blank=True)
    mpan_check = models.CharField(
        max_length=8, choices=MpanCheck.choices, default=MpanCheck.WARNING
    )
    late_after_days = models.PositiveSmallIntegerField(default=14)
    business_rules = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="validation_settings_tenant"),
        ]

    def __str__(self) -> str:
        return f"validation settings of {self.tenant_id}"


class KeyVersion(TenantOwned):
    """The newest version held of one business key on one connection: the history that the
    contextual stage's duplicate and ordering checks read (one row per key, so a look-up costs
    one index probe however many messages the key has had).

    Versions are UTC sender timestamps (``YYYY-MM-DDThh:mm:ssZ``), ordered as text. Written by
    inbound processing in the transaction that moves the message out of ``received``."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=120)
    version = models.CharField(max_length=20)
    sender_reference = models.CharField(max_length=200, default="")
    message_id = models.BigIntegerField()
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "connection", "key"], name="key_version_connection_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} @ {self.version}"
