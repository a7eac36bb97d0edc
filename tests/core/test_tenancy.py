"""The tenant context and its two known traps, on real PostgreSQL as the runtime role."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, ProgrammingError, connection, transaction

from core.tenancy import (
    NoTenantError,
    current_tenant_id,
    get_current_tenant_id,
    tenant_context,
    tenant_task,
)
from tenants.models import Channel, DipIdentity, Tenant


def db_tenant_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.tenant_id', true)")
        return cursor.fetchone()[0] or ""


def test_reads_without_a_tenant_see_nothing(world):
    assert DipIdentity.objects.count() == 0
    assert Tenant.objects.count() == 0
    with tenant_context(world.acme.id):
        assert DipIdentity.objects.count() == 1


def test_writes_without_a_tenant_fail_loudly(world):
    with pytest.raises(NoTenantError, match="no tenant context"):
        DipIdentity(mpid="NOPE", role_code="SUP", dip_id="1000000009")


def test_a_forged_tenant_id_on_write_is_refused_by_the_database(world):
    with tenant_context(world.acme.id):
        identity = DipIdentity(mpid="FAKE", role_code="SUP", dip_id="1000000009")
        identity.tenant_id = world.globex.id
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            identity.save()


def test_an_update_cannot_move_a_row_to_another_tenant(world):
    with tenant_context(world.acme.id):
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            DipIdentity.objects.update(tenant_id=world.globex.id)
        assert DipIdentity.objects.filter(tenant_id=world.acme.id).count() == 1


def test_raw_sql_sees_only_the_current_tenant(world):
    with tenant_context(world.globex.id), connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id, mpid FROM tenants_dipidentity")
        rows = cursor.fetchall()
        cursor.execute(
            "SELECT count(*) FROM tenants_connection WHERE tenant_id = %s", [world.acme.id]
        )
        acme_connections = cursor.fetchone()[0]
    assert rows == [(world.globex.id, "GLBX")]
    assert acme_connections == 0


def test_a_nested_context_restores_the_outer_tenant(world):
    """Trap 1: a transaction-local setting outlives a savepoint's release."""
    with tenant_context(world.acme.id):
        with tenant_context(world.globex.id):
            assert db_tenant_setting() == str(world.globex.id)
            assert DipIdentity.objects.get().mpid == "GLBX"
        assert db_tenant_setting() == str(world.acme.id)
        assert current_tenant_id() == world.acme.id
        assert DipIdentity.objects.get().mpid == "ACME"
    assert get_current_tenant_id() is None
    assert db_tenant_setting() == ""


def test_a_failed_nested_context_restores_the_outer_tenant(world):
    with tenant_context(world.acme.id):
        with pytest.raises(RuntimeError, match="boom"), tenant_context(world.globex.id):
            raise RuntimeError("boom")
        assert db_tenant_setting() == str(world.acme.id)
        assert current_tenant_id() == world.acme.id


def test_on_commit_callbacks_see_no_stale_tenant(committed_db):
    """Trap 2: on_commit runs after the block; it must not run as the tenant it left."""
    from tests.conftest import build_world

    world = build_world()
    seen: dict[str, object] = {}

    def after_commit() -> None:
        seen["context"] = get_current_tenant_id()
        seen["database"] = db_tenant_setting()
        seen["visible_channels"] = Channel.objects.count()

    with tenant_context(world.acme.id):
        transaction.on_commit(after_commit)
    assert seen == {"context": None, "database": "", "visible_channels": 0}


def test_tenant_task_runs_its_body_in_the_named_tenant(world):
    @tenant_task
    def count_identities_task(tenant_id: str) -> list[str]:
        return [identity.mpid for identity in DipIdentity.objects.all()]

    assert count_identities_task(str(world.globex.id)) == ["GLBX"]
    assert count_identities_task(tenant_id=world.acme.id) == ["ACME"]
    with pytest.raises(NoTenantError, match="count_identities_task needs tenant_id"):
        count_identities_task(None)


def test_duplicate_identity_is_named_not_an_integrity_error(world):
    from django.core.exceptions import ValidationError

    from tenants import services

    with tenant_context(world.acme.id), pytest.raises(ValidationError, match="mpid=ACME"):
        services.create_identity(mpid="ACME", role_code="SUP", dip_id="1000000003")
    with (
        tenant_context(world.globex.id),
        pytest.raises(ValidationError, match="already registered"),
    ):
        services.create_identity(mpid="GLBX", role_code="SUP", dip_id="1000000001")


def test_database_refuses_a_duplicate_even_past_the_service(world):
    with (
        tenant_context(world.acme.id),
        pytest.raises(IntegrityError, match="identity_dip_id_global"),
        transaction.atomic(),
    ):
        DipIdentity.objects.create(mpid="ACMZ", role_code="SUP", dip_id="1000000001")


def test_unknown_tenant_context_sees_nothing(world):
    with tenant_context(uuid.uuid4()):
        assert DipIdentity.objects.count() == 0
        assert Channel.objects.count() == 0
