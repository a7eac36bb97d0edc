"""Writes: importing a specification (as the owner role) and a tenant's validation settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from django.db import connection as db
from django.db import transaction

from core.audit import record_event
from messaging.validation import schemas as builtin
from messaging.validation.models import (
    KeyVersion,
    MpanCheck,
    SpecSchema,
    SpecVersion,
    TenantValidationSettings,
)
from messaging.validation.openapi import read_spec
from messaging.validation.selectors import UnknownSpecVersion, get_registry_by_name
from messaging.validation.stages import get_ci, rules_from_json
from messaging.validation.types import ValidationOutcome

logger = logging.getLogger(__name__)
OWNER = "owner"  # the registry is global and read-only for the runtime role


class SpecConflict(ValueError):
    """A spec version of that name exists with different content (use replace)."""


def import_spec(
    *,
    directory: str | Path,
    name: str | None = None,
    replace: bool = False,
    make_default: bool = False,
) -> tuple[SpecVersion, bool]:
    """Read the official specification in ``directory`` and store it as spec version ``name``
    (default: the API version it declares, e.g. ``2.1.0``), one resolved schema per variant.

    Runs on the owner connection in one transaction: nothing is half-written. Importing the same
    files again changes nothing. Returns ``(spec version, created)``. Raises ``SpecError`` (a
    ``ValueError``) for a folder that is not a specification, :class:`SpecConflict` when ``name``
    holds other content and ``replace`` is false, ``ValueError`` for a reserved or bad name.
    ``make_default``: the version then validates every tenant not pinned to another (importing
    alone never changes live validation, so a new version can be tried side by side first).
    """
    if name is not None:
        _check_name(name)
    spec = read_spec(directory)
    name = name or spec.api_version
    _check_name(name)
    with transaction.atomic(using=OWNER):
        existing = SpecVersion.objects.using(OWNER).select_for_update().filter(name=name).first()
        was_default = False
        if existing is not None and existing.digest == spec.digest:
            if make_default:
                _make_default(existing)
            return existing, False
        if existing is not None:
            if not replace:
                raise SpecConflict(
                    f"spec version {name!r} was imported from other files (digest {existing.digest[:12]});"
                    " choose another name or replace it"
                )
            was_default = existing.is_default  # a replaced default stays the default
            existing.delete(using=OWNER)
        version = SpecVersion.objects.using(OWNER).create(
            name=name,
            api_version=spec.api_version,
            source=str(spec.directory)[:500],
            digest=spec.digest,
            schema_count=len(spec.variants),
        )
        SpecSchema.objects.using(OWNER).bulk_create(
            [
                SpecSchema(
                    spec=version,
                    interface_id=v.interface_id,
                    schema_version=v.schema_version,
                    event_code=v.event_code,
                    schema=v.schema,
                )
                for v in spec.variants
            ],
            batch_size=50,
        )
        if make_default or was_default:
            _make_default(version)
    logger.info("validation.spec_imported", extra={"spec": name, "schemas": len(spec.variants)})
    return version, True


def _make_default(version: SpecVersion) -> None:
    """Mark ``version`` the default (inside the owner's import transaction)."""
    SpecVersion.objects.using(OWNER).filter(is_default=True).exclude(id=version.id).update(
        is_default=False
    )
    version.is_default = True
    version.save(using=OWNER, update_fields=["is_default"])


def _check_name(name: str) -> None:
    if not name or len(name) > 40 or name != name.strip():
        raise ValueError(
            "a spec version name of 1 to 40 characters, no surrounding spaces, is needed"
        )
    if name == builtin.SPEC_NAME:
        raise ValueError(f"{name!r} is reserved for Busbar's built-in schemas")


@transaction.atomic
def set_tenant_validation(
    *,
    tenant_id: UUID | str,
    spec_version: str | None = None,
    mpan_check: str | None = None,
    late_after_days: int | None = None,
    business_rules: dict[str, Any] | None = None,
    actor: str = "system",
) -> TenantValidationSettings:
    """Create or change the tenant's validation settings (inside its tenant context).

    ``spec_version``: a name to pin (``""`` unpins). Only the arguments given change; the change
    is written to the tenant's audit log with ``actor``. Raises
    ``ValueError`` naming the problem (unknown spec version, bad MPAN-check level, bad rules);
    nothing is written then.
    """
    if spec_version:
        try:
            get_registry_by_name(spec_version)
        except UnknownSpecVersion as err:
            raise ValueError(str(err)) from None
    if mpan_check is not None and mpan_check not in MpanCheck.values:
        raise ValueError(f"mpan_check must be one of {', '.join(MpanCheck.values)}")
    if late_after_days is not None and not 0 <= late_after_days <= 3650:
        raise ValueError("late_after_days must be between 0 and 3650")
    if business_rules is not None:
        rules_from_json(business_rules)
    found = TenantValidationSettings.objects.select_for_update().filter(tenant_id=tenant_id).first()
    settings = found or TenantValidationSettings()
    if spec_version is not None:
        settings.spec_version = spec_version
    if mpan_check is not None:
        settings.mpan_check = mpan_check
    if late_after_days is not None:
        settings.late_after_days = late_after_days
    if business_rules is not None:
        settings.business_rules = business_rules
    settings.save()
    record_event(
        action="validation.settings_changed",
        actor=actor,
        object_type="validation_settings",
        object_id=settings.id,
        detail={
            "spec_version": settings.spec_version,
            "mpan_check": settings.mpan_check,
            "late_after_days": settings.late_after_days,
            "business_rules": settings.business_rules,
        },
    )
    return settings


# One statement for a batch; a key moves only forward (a late or repeated message leaves the
# newest version in place, so the next message is compared with the newest the tenant holds).
_RECORD_KEYS_SQL = f"""
INSERT INTO {KeyVersion._meta.db_table}
    (tenant_id, connection_id, key, version, sender_reference, message_id)
SELECT %s, %s, k.key, k.version, k.reference, k.message_id
FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[])
    AS k(key, version, reference, message_id)
ON CONFLICT (tenant_id, connection_id, key) DO UPDATE
SET version = EXCLUDED.version, sender_reference = EXCLUDED.sender_reference,
    message_id = EXCLUDED.message_id, updated_at = now()
WHERE {KeyVersion._meta.db_table}.version < EXCLUDED.version
"""


def record_key_versions(
    *,
    tenant_id: UUID | str,
    connection_id: int,
    outcomes: Sequence[tuple[int, ValidationOutcome]],
) -> int:
    """Remember the business keys and versions of validated messages of one connection, so
    that later batches see them as history; ``outcomes`` holds (message id, outcome). Messages stopped by a fatal finding are not history (the engine treats them the
    same way within a batch). Call inside the tenant's context, in the transaction that moves
    the messages on. Returns the number of keys written."""
    newest: dict[str, tuple[str, str, int]] = {}
    for message_id, outcome in outcomes:
        if outcome.stopped_at is not None:
            continue
        s1 = get_ci(get_ci(outcome.payload, "CommonBlock"), "S1")
        reference = get_ci(s1, "senderUniqueReference")
        reference = reference if isinstance(reference, str) else ""
        for key in outcome.business_keys:
            held = newest.get(key.key)
            if held is None or held[0] < key.version:
                newest[key.key] = (key.version, reference, message_id)
    if not newest:
        return 0
    # Sorted, so two batches writing overlapping keys lock them in the same order.
    keys = sorted(newest)
    with db.cursor() as cursor:
        cursor.execute(
            _RECORD_KEYS_SQL,
            [
                str(tenant_id),
                connection_id,
                keys,
                [newest[k][0] for k in keys],
                [newest[k][1] for k in keys],
                [newest[k][2] for k in keys],
            ],
        )
    return len(keys)
