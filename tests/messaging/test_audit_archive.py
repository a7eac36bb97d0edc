"""Audit log archiving: three months live, twelve archived, and the ledger keeps verifying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.evidence import audit_archive, ledger
from messaging.models import AuditArchive
from tests.conftest import PASSWORD


@pytest.fixture
def archive_dir(settings, tmp_path):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    settings.BUSBAR_AUDIT_ARCHIVE_DIR = tmp_path
    return tmp_path


def _signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def _events_at(moment: datetime, count: int, action: str = "message.resolved") -> None:
    with time_machine.travel(moment, tick=False):
        for n in range(count):
            record_event(action=action, actor="bob", object_type="message", object_id=n)


def test_months_past_the_live_period_move_to_files_and_the_ledger_still_verifies(
    world, archive_dir
):
    now = timezone.now()
    june = (now - timedelta(days=170)).replace(day=15)
    july = (now - timedelta(days=140)).replace(day=10)
    recent = now - timedelta(days=30)
    with tenant_context(world.acme.id):
        _events_at(june, 3)
        _events_at(july, 2)
        _events_at(recent, 1)
        assert ledger.seal_tenant(tenant_id=world.acme.id) is not None
        archived = audit_archive.archive_due_months(tenant_id=world.acme.id)
        months = {f"{a.period_from:%Y-%m}": a.events for a in archived}
        assert months == {f"{june:%Y-%m}": 3, f"{july:%Y-%m}": 2}
        live_cutoff = min(a.period_to for a in archived)
        # The live log no longer holds them; the recent one stays live.
        assert not AuditEvent.objects.filter(occurred_at__lt=archived[-1].period_to).exists()
        assert AuditEvent.objects.filter(occurred_at__gte=recent - timedelta(seconds=1)).exists()
        assert live_cutoff <= now - timedelta(days=92)
        for archive in archived:
            assert audit_archive.archive_path(archive).is_file()
            assert archive.purge_after >= archive.period_to + timedelta(days=92 + 365)
        assert AuditEvent.objects.filter(action="audit.archived").count() == 2
        # The ledger reads archived months from their files: nothing is missing or changed.
        assert ledger.verify_ledger(tenant_id=world.acme.id).problems == []
        # Tenant admins see the archived months on the Activity page.
        page = _signed_in("alice").get("/activity/").content.decode()
        assert f"<td>{june:%Y-%m}</td><td>3</td>" in page
        # Running again archives nothing more.
        assert audit_archive.archive_due_months(tenant_id=world.acme.id) == []

        # An archive file altered afterwards is named by the verification job.
        path = audit_archive.archive_path(archived[0])
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        problems = ledger.verify_ledger(tenant_id=world.acme.id).problems
        assert any(
            f"audit archive {june:%Y-%m} changed after it was written" in p for p in problems
        )
        path.unlink()
        problems = ledger.verify_ledger(tenant_id=world.acme.id).problems
        assert any(f"audit archive {june:%Y-%m} is missing" in p for p in problems)
        path.write_bytes(original)

        # At the end of the archive period the files go; the rows say when, and the ledger
        # accepts those entries as retired (their hashes stay in the seal leaves).
        purged = audit_archive.purge_expired_archives(now=now + timedelta(days=800))
        assert purged == 2
        assert not path.exists()
        assert AuditArchive.objects.filter(purged_at__isnull=True).count() == 0
        assert ledger.verify_ledger(tenant_id=world.acme.id).problems == []
    with tenant_context(world.globex.id):
        assert not AuditArchive.objects.exists()  # another tenant's archives are its own


def test_a_month_is_not_archived_before_the_ledger_has_sealed_it(world, archive_dir):
    with tenant_context(world.acme.id):
        _events_at(timezone.now() - timedelta(days=170), 2)
        assert audit_archive.archive_due_months(tenant_id=world.acme.id) == []
        assert AuditEvent.objects.filter(action="message.resolved").count() == 2


def test_the_database_releases_only_whole_archived_months_past_three_months(world, archive_dir):
    """The runtime role cannot delete audit events, and the one function that may refuses a
    month that is too recent or whose archive does not hold exactly the live events."""
    now = timezone.now()
    old = (now - timedelta(days=170)).replace(day=15)
    with tenant_context(world.acme.id):
        _events_at(old, 2)
        with (
            pytest.raises(DatabaseError, match="permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("DELETE FROM core_auditevent")
        start = old.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        short = AuditArchive.objects.create(
            period_from=start,
            period_to=(start + timedelta(days=32)).replace(day=1),
            events=5,
            sha256="0" * 64,
            file_name="forged.jsonl.zst",
            purge_after=now + timedelta(days=400),
        )
        with (
            pytest.raises(DatabaseError, match="holds 5 events but the live log has 2"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT busbar_release_archived_audit(%s)", [short.id])
        this_month = datetime(now.year, now.month, 1, tzinfo=UTC)
        recent = AuditArchive.objects.create(
            period_from=this_month,
            period_to=this_month + timedelta(days=31),
            events=0,
            sha256="0" * 64,
            file_name="recent.jsonl.zst",
            purge_after=now + timedelta(days=400),
        )
        with (
            pytest.raises(DatabaseError, match="stay live for at least 92 days"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT busbar_release_archived_audit(%s)", [recent.id])
        # Nor may an archive row be rewritten to fit.
        with (
            pytest.raises(DatabaseError, match="permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("UPDATE messaging_audit_archive SET events = 2")
        assert AuditEvent.objects.filter(action="message.resolved").count() == 2
