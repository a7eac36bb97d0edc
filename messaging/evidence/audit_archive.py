"""Audit log archiving: months past the live period move to compressed files, kept, then purged.

The DIP's Code of Connection asks for audit logs three months live and twelve months archived.
A whole calendar month of a tenant's audit events is archived once it ended more than
``BUSBAR_AUDIT_LIVE_DAYS`` ago (never fewer than 92) and the ledger has sealed it. The file holds
each event exactly as the ledger sealed it (the same canonical record, so its leaf hash is the
same), zstd-compressed JSON lines; its SHA-256 and event count are recorded in
``messaging_audit_archive``, and only then may the database function
``busbar_release_archived_audit`` delete that month from the live table, refusing when the counts
differ. The ledger reads archived months from the file, so seals keep verifying, and a changed
or missing file is a named problem of the verification job. After ``BUSBAR_AUDIT_ARCHIVE_DAYS``
(never fewer than 365) the file is purged; the seal leaves still hold each entry's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import zstandard
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.audit import record_event
from messaging.models import AuditArchive, Seal

MIN_LIVE_DAYS = 92
MIN_ARCHIVE_DAYS = 365


class ArchiveError(Exception):
    """An archive file that is missing or no longer what was recorded."""


def live_days() -> int:
    return max(MIN_LIVE_DAYS, int(settings.BUSBAR_AUDIT_LIVE_DAYS))


def archive_days() -> int:
    return max(MIN_ARCHIVE_DAYS, int(settings.BUSBAR_AUDIT_ARCHIVE_DAYS))


def _month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def archive_path_for(tenant_id: UUID | str, file_name: str) -> Path:
    return Path(settings.BUSBAR_AUDIT_ARCHIVE_DIR) / str(tenant_id) / file_name


def archive_path(archive: AuditArchive) -> Path:
    return archive_path_for(str(archive.tenant_id), archive.file_name)


def audit_records(
    *, tenant_id: UUID | str, window_from: datetime, window_to: datetime
) -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    """The tenant's live audit events in ``[window_from, window_to)`` as ledger records: (id, time,
    record), ordered by time then id. The one place the ledger's audit record is shaped."""
    from messaging.evidence.ledger import _iso

    tenant = str(tenant_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, occurred_at, actor, action, category, object_type, object_id, detail"
            " FROM core_auditevent WHERE tenant_id = %s AND occurred_at >= %s"
            " AND occurred_at < %s ORDER BY occurred_at, id",
            [tenant, window_from, window_to],
        )
        for aid, occurred, actor, action, category, object_type, object_id, detail in cursor:
            yield (
                str(aid),
                occurred,
                {
                    "source": "audit",
                    "id": str(aid),
                    "tenant": tenant,
                    "at": _iso(occurred),
                    "actor": actor,
                    "action": action,
                    "category": category,
                    "object_type": object_type,
                    "object_id": object_id,
                    "detail": detail,
                },
            )


def _read_archive(archive: AuditArchive) -> list[dict[str, Any]]:
    path = archive_path(archive)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArchiveError(
            f"audit archive {archive.period_from:%Y-%m} is missing ({path})"
        ) from exc
    if hashlib.sha256(data).hexdigest() != archive.sha256:
        raise ArchiveError(
            f"audit archive {archive.period_from:%Y-%m} changed after it was written ({path})"
        )
    lines = zstandard.ZstdDecompressor().decompress(data).splitlines()
    return [json.loads(line) for line in lines]


def archived_records(
    *, window_from: datetime, window_to: datetime
) -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    """Archived audit records of the current tenant in ``[window_from, window_to)``, as
    ``audit_records`` gives live ones. Raises ArchiveError for a missing or altered file; a
    purged archive yields nothing (its hashes live on in the seal leaves)."""
    archives = AuditArchive.objects.filter(
        period_from__lt=window_to, period_to__gt=window_from, purged_at__isnull=True
    ).order_by("period_from")
    for archive in archives:
        for record in _read_archive(archive):
            at = datetime.fromisoformat(record["at"])
            if window_from <= at < window_to:
                yield record["id"], at, record


def purged_periods() -> list[tuple[datetime, datetime]]:
    """The current tenant's archived months whose files were purged at the end of retention."""
    return list(
        AuditArchive.objects.filter(purged_at__isnull=False)
        .order_by("period_from")
        .values_list("period_from", "period_to")
    )


def _write_file(path: Path, records: list[dict[str, Any]]) -> str:
    """Write the records compressed, durably (temporary file, fsync, rename); returns SHA-256."""
    payload = b"".join(
        json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        for record in records
    )
    data = zstandard.ZstdCompressor(level=10).compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_suffix(".partial")
    with draft.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    draft.replace(path)
    return hashlib.sha256(data).hexdigest()


def archive_due_months(
    *, tenant_id: UUID | str, now: datetime | None = None, actor: str = "system:audit-archive"
) -> list[AuditArchive]:
    """Archive every whole month of the current tenant's audit log that is past the live period
    and sealed. Each month is its own transaction: file written and synced, archive row recorded,
    live rows released by the database function, or nothing at all."""
    now = now or timezone.now()
    cutoff = _month_start(now - timedelta(days=live_days()))  # months ending by then are due
    last_seal = Seal.objects.order_by("-seq").first()
    if last_seal is None:
        return []  # nothing sealed yet: an archived month must already be in the ledger
    cutoff = min(cutoff, _month_start(last_seal.window_to))
    done: list[AuditArchive] = []
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT min(occurred_at) FROM core_auditevent"
                " WHERE tenant_id = %s AND occurred_at < %s",
                [str(tenant_id), cutoff],
            )
            oldest = cursor.fetchone()[0]
        if oldest is None:
            return done
        start = _month_start(oldest)
        end = _next_month(start)
        with transaction.atomic():
            records = [
                record
                for _, _, record in audit_records(
                    tenant_id=tenant_id, window_from=start, window_to=end
                )
            ]
            name = f"audit-{start:%Y-%m}.jsonl.zst"
            archive = AuditArchive(
                period_from=start,
                period_to=end,
                events=len(records),
                file_name=name,
                purge_after=end + timedelta(days=live_days() + archive_days()),
            )
            archive.sha256 = _write_file(archive_path_for(tenant_id, name), records)
            archive.save()
            with connection.cursor() as cursor:
                cursor.execute("SELECT busbar_release_archived_audit(%s)", [archive.id])
                released = cursor.fetchone()[0]
            if released != len(records):  # the function refuses a mismatch; this is belt and braces
                raise ArchiveError(
                    f"audit {start:%Y-%m}: archived {len(records)} events, released {released}"
                )
            record_event(
                action="audit.archived",
                actor=actor,
                object_type="audit_archive",
                object_id=archive.id,
                detail={
                    "month": f"{start:%Y-%m}",
                    "events": len(records),
                    "sha256": archive.sha256,
                    "purge_after": archive.purge_after.isoformat(),
                },
            )
        done.append(archive)


def purge_expired_archives(
    *, now: datetime | None = None, actor: str = "system:audit-archive"
) -> int:
    """Remove the current tenant's archive files past their archive period; returns how many.
    The row stays (with ``purged_at``), so the ledger knows why the entries are gone."""
    now = now or timezone.now()
    purged = 0
    for archive in AuditArchive.objects.filter(purged_at__isnull=True, purge_after__lte=now):
        with transaction.atomic():
            AuditArchive.objects.filter(id=archive.id).update(purged_at=now)
            record_event(
                action="audit.archive_purged",
                actor=actor,
                object_type="audit_archive",
                object_id=archive.id,
                detail={"month": f"{archive.period_from:%Y-%m}", "events": archive.events},
            )
        archive_path(archive).unlink(missing_ok=True)
        purged += 1
    return purged
