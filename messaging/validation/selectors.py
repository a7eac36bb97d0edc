"""Reads: which registry validates a tenant's messages, the tenant's rules, the spec versions."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from uuid import UUID

from django.db import connection as db

from messaging.validation import schemas as builtin
from messaging.validation.models import (
    KeyVersion,
    SpecSchema,
    SpecVersion,
    TenantValidationSettings,
)
from messaging.validation.registry import SchemaRegistry
from messaging.validation.stages import rules_from_json
from messaging.validation.types import KeyRecord, Severity, TenantRules

_BUILTIN: SchemaRegistry | None = None
_CACHE: dict[str, tuple[int, str, SchemaRegistry]] = {}
_LOCK = threading.Lock()


class UnknownSpecVersion(LookupError):
    """No spec version of that name is imported."""


def builtin_registry() -> SchemaRegistry:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = SchemaRegistry.builtin()
    return _BUILTIN


def list_spec_versions() -> list[SpecVersion]:
    """Imported spec versions, newest first (the built-in schemas are not a row)."""
    return list(SpecVersion.objects.order_by("-imported_at", "-id"))


def get_registry_by_name(name: str) -> SchemaRegistry:
    """The registry of spec version ``name``; compiled validators are kept between calls.

    A re-imported version (new row or new digest) is reloaded. Raises :class:`UnknownSpecVersion`.
    """
    if name == builtin.SPEC_NAME:
        return builtin_registry()
    row = SpecVersion.objects.filter(name=name).values_list("id", "digest").first()
    if row is None:
        raise UnknownSpecVersion(
            f"spec version {name!r} is not imported (see manage.py import_dip_spec)"
        )
    cached = _CACHE.get(name)
    if cached is not None and cached[:2] == row:
        return cached[2]
    with _LOCK:
        rows = SpecSchema.objects.filter(spec_id=row[0]).values_list(
            "interface_id", "schema_version", "event_code", "schema"
        )
        registry = SchemaRegistry.from_rows(name, rows.iterator(chunk_size=200))
        _CACHE[name] = (row[0], row[1], registry)
    return registry


def default_spec_name() -> str:
    """The spec version marked default, else Busbar's built-in schemas. Importing a version does
    not make it the default: trying a new version side by side never changes live validation."""
    default = SpecVersion.objects.filter(is_default=True).values_list("name", flat=True).first()
    return default or builtin.SPEC_NAME


def get_tenant_settings(*, tenant_id: UUID | str) -> TenantValidationSettings | None:
    """The tenant's settings row (inside its tenant context), or None when it has none."""
    return TenantValidationSettings.objects.filter(tenant_id=tenant_id).first()


def get_registry(
    *, tenant_id: UUID | str | None = None, spec_version: str | None = None
) -> SchemaRegistry:
    """The registry to validate with: ``spec_version`` when named, else the tenant's pinned one,
    else the default (:func:`default_spec_name`). Call inside the tenant's context."""
    name = spec_version
    if name is None and tenant_id is not None:
        found = get_tenant_settings(tenant_id=tenant_id)
        name = found.spec_version if found is not None and found.spec_version else None
    return get_registry_by_name(name or default_spec_name())


def get_tenant_rules(*, tenant_id: UUID | str) -> TenantRules:
    """The tenant's validation rules (defaults when it has no settings row)."""
    found = get_tenant_settings(tenant_id=tenant_id)
    if found is None:
        return TenantRules()
    mpan = None if found.mpan_check == "off" else Severity(found.mpan_check)
    return TenantRules(
        mpan_check=mpan,
        late_after_days=found.late_after_days,
        business=rules_from_json(found.business_rules),
    )


_KEY_HISTORY_SQL = f"""
SELECT key, version, sender_reference FROM {KeyVersion._meta.db_table}
WHERE tenant_id = %s AND connection_id = %s AND key = ANY(%s)
"""


class StoredKeyHistory:
    """The business-key history of one connection, as the validation engine asks for it (a
    :class:`~messaging.validation.types.KeyHistory`): one query for all the keys of a batch.
    Call inside the tenant's context."""

    def __init__(self, *, tenant_id: UUID | str, connection_id: int) -> None:
        self.tenant_id = str(tenant_id)
        self.connection_id = connection_id

    def __call__(self, keys: Sequence[str], /) -> Mapping[str, KeyRecord]:
        if not keys:
            return {}
        with db.cursor() as cursor:
            cursor.execute(_KEY_HISTORY_SQL, [self.tenant_id, self.connection_id, list(keys)])
            return {key: KeyRecord(version, reference) for key, version, reference in cursor}
