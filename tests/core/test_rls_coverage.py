"""Row-level security covers every tenant table, and the roles have exactly the rights they need."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import ProgrammingError, connection, connections, transaction

from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from tests.conftest import GLOBAL_TABLES

CLOSED_TABLES = {
    "guardian_userobjectpermission",
    "guardian_groupobjectpermission",
    "otp_totp_totpdevice",  # would hold second-factor seeds in clear
}


def public_tables() -> dict[str, tuple[bool, bool, int, bool]]:
    """table -> (rls enabled, rls forced, number of policies, has a tenant column)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid),
                   EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                           AND a.attname = 'tenant_id' AND NOT a.attisdropped)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            """
        )
        return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}


def test_every_tenant_table_has_rls_enabled_forced_and_a_policy(db):
    tables = public_tables()
    tenant_tables = [name for name, info in tables.items() if info[3]] + ["tenants_tenant"]
    assert len(tenant_tables) >= 10
    for name in tenant_tables:
        enabled, forced, policies, _ = tables[name]
        assert (enabled, forced, policies > 0) == (True, True, True), name


def test_every_other_table_is_allow_listed_with_a_reason(db):
    tables = public_tables()
    unaccounted = sorted(
        name
        for name, (enabled, forced, policies, has_tenant) in tables.items()
        if not (enabled and forced and policies) and name not in GLOBAL_TABLES
    )
    assert unaccounted == []
    assert all(reason.strip() for reason in GLOBAL_TABLES.values())
    stale = sorted(set(GLOBAL_TABLES) - set(tables))
    assert stale == [], "allow-list names tables that no longer exist"


def test_partitions_are_reachable_only_through_their_rls_parent(db):
    """RLS applies to a partitioned table's rows when read through it, not to a partition read
    directly: so no application role holds any privilege on a partition, and each is forced with no
    policy (closed) in case one is ever granted."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid),
                   has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE'),
                   has_table_privilege(%s, c.oid, 'SELECT')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relispartition AND c.relkind = 'r'
            """,
            [settings.DB_RUNTIME_ROLE, settings.DB_SUPPORT_ROLE],
        )
        partitions = cursor.fetchall()
    assert len(partitions) >= 20  # four store tables, five months each
    for name, enabled, forced, policies, runtime_may, support_may in partitions:
        assert (enabled, forced, policies, runtime_may, support_may) == (
            True,
            True,
            0,
            False,
            False,
        ), name


def test_guardians_generic_tables_are_closed(db):
    tables = public_tables()
    for name in CLOSED_TABLES:
        assert tables[name][:2] == (True, True)


def test_the_runtime_role_bypasses_nothing_and_owns_nothing(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = current_user"
        )
        name, *powers = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
        )
        owned = cursor.fetchone()[0]
    assert name == settings.DB_RUNTIME_ROLE
    assert powers == [False, False, False, False]
    assert owned == 0


def test_the_audit_log_is_append_only_for_the_runtime_role(world):
    with tenant_context(world.acme.id):
        event = record_event(action="test.event", actor="pytest")
        with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
            AuditEvent.objects.filter(id=event.id).update(action="tampered")
        with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
            AuditEvent.objects.filter(id=event.id).delete()
        assert AuditEvent.objects.get(id=event.id).action == "test.event"


def test_audit_events_are_tenant_scoped(world):
    with tenant_context(world.acme.id):
        record_event(action="acme.only", actor="pytest")
    with tenant_context(world.globex.id):
        assert not AuditEvent.objects.filter(action="acme.only").exists()
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="acme.only").count() == 1


def test_support_reads_metadata_across_tenants_but_never_secrets(committed_db):
    from tests.conftest import build_world

    build_world()
    with connections["support"].cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == settings.DB_SUPPORT_ROLE
        cursor.execute("SELECT slug FROM tenants_tenant ORDER BY slug")
        assert [row[0] for row in cursor.fetchall()] == ["acme", "globex"]
        cursor.execute("SELECT environment, api_key_hint FROM tenants_connection ORDER BY 1, 2")
        assert len(cursor.fetchall()) == 2
    for secret_query in (
        "SELECT api_key_encrypted FROM tenants_connection",
        "SELECT webhook_token FROM tenants_channel",
        "SELECT secret_hash FROM tenants_apicredential",
        "SELECT * FROM tenants_connection",
    ):
        with (
            pytest.raises(ProgrammingError, match="permission denied"),
            connections["support"].cursor() as cursor,
        ):
            cursor.execute(secret_query)
        connections["support"].close()
    with (
        pytest.raises(ProgrammingError, match="permission denied"),
        connections["support"].cursor() as cursor,
    ):
        cursor.execute("UPDATE tenants_channel SET status = 'disabled'")
    connections["support"].close()
