"""Fixtures shared by the whole suite: a real PostgreSQL test database migrated by the owner role
and used by the runtime role, and the personas (acme's alice and bob, globex's charlie)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.devenv import bootstrap_database
from core.tenancy import tenant_context

# The browser fixture (Debian's chromium through Playwright) for any test that asks for it.
pytest_plugins = ["tests.browser"]

# Tables that hold no tenant's data, each with the reason it needs no RLS.
GLOBAL_TABLES = {
    "auth_user": "people; a user may belong to several tenants (memberships are RLS-scoped)",
    "auth_group": "staff role names only",
    "auth_group_permissions": "permission sets of staff groups",
    "auth_permission": "Django's catalogue of permission codenames",
    "auth_user_groups": "staff group membership",
    "auth_user_user_permissions": "model-level permissions of staff",
    "django_content_type": "Django's catalogue of models",
    "django_migrations": "schema history",
    "django_session": "session store, keyed by an unguessable id; holds the chosen tenant id only",
    "django_admin_log": "staff actions in Django admin (staff only)",
    "core_totpsecondfactor": "a person's second factor, not a tenant's; its seed is encrypted",
    "core_recoverycodes": "a person's recovery codes, not a tenant's; only their hashes",
    "core_temporarypassword": "marks a person whose password someone else set (no secret)",
    "messaging_specversion": "imported DIP specifications, the same for every tenant; the runtime role only reads it",
    "messaging_specschema": "the schemas of those specifications (global, read-only for the runtime role)",
}


def admin_conninfo(dbname: str | None = None) -> str:
    params = conninfo_to_dict(os.environ["BUSBAR_ADMIN_DATABASE_URL"])
    if dbname:
        params["dbname"] = dbname
    return make_conninfo(**params)


def runtime_conninfo() -> str:
    """The test database as Django's default connection reaches it: the runtime role."""
    db = settings.DATABASES["default"]
    return make_conninfo(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """Create the test database fresh, migrate it as the owner, and hand it to the runtime role."""
    name = settings.DATABASES["default"]["NAME"]
    with django_db_blocker.unblock():
        for conn in connections.all():
            conn.close()
        bootstrap_database(admin_conninfo(), name, drop=True)
        call_command("migrate", database="owner", verbosity=0, interactive=False)
        connections["owner"].close()
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            conn.close()


@pytest.fixture(scope="session", autouse=True)
def _runtime_role_guard(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> None:
    """Fail the whole suite if the tests would connect as a role that bypasses RLS."""
    with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        user, bypasses = cursor.fetchone()
    if bypasses:
        pytest.exit(f"tests connect as {user}, which bypasses row-level security", returncode=3)


@pytest.fixture
def committed_db(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """Database access without the per-test transaction, for threads and other processes.

    The runtime role may not TRUNCATE, so the tables are emptied afterwards over an administrative
    connection (what Django's transactional flush would do as a more privileged user).
    """
    with django_db_blocker.unblock():
        yield
        for conn in connections.all():
            conn.close()
    truncate_all_tables()


def truncate_all_tables() -> None:
    keep = {"django_migrations", "django_content_type", "auth_permission"}
    with psycopg.connect(
        admin_conninfo(settings.DATABASES["default"]["NAME"]), autocommit=True
    ) as c:
        tables = [
            row[0]
            for row in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if row[0] not in keep
        ]
        c.execute("SET session_replication_role = replica")  # the audit trigger refuses deletes
        c.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@dataclass
class Persona:
    username: str
    tenant_id: object
    user: object


@dataclass
class World:
    acme: object
    globex: object
    alice: Persona
    bob: Persona
    charlie: Persona


PASSWORD = "correct-horse-battery-staple"


def build_world() -> World:
    from tenants import services
    from tenants.models import Role

    acme = services.create_tenant(slug="acme", name="Acme Energy Supply")
    globex = services.create_tenant(slug="globex", name="Globex Smart Data")
    with tenant_context(acme.id):
        alice = services.create_user(
            username="alice",
            email="alice@acme.example",
            password=PASSWORD,
            roles=[Role.TENANT_ADMIN, Role.CERTIFICATE_ADMIN],
        )
        bob = services.create_user(
            username="bob",
            email="bob@acme.example",
            password=PASSWORD,
            roles=[Role.MESSAGE_OPERATOR],
        )
        identity = services.create_identity(mpid="ACME", role_code="SUP", dip_id="1000000001")
        connection = services.create_connection(
            identity=identity,
            environment="UIT",
            dip_base_url="https://dip.example",
            api_key="acme-dip-api-key-123",
        )
        services.create_channel(connection=connection, interface_id="IF-021", direction="inbound")
    with tenant_context(globex.id):
        charlie = services.create_user(
            username="charlie",
            email="charlie@globex.example",
            password=PASSWORD,
            roles=[Role.TENANT_ADMIN],
        )
        identity = services.create_identity(mpid="GLBX", role_code="SDS", dip_id="1000000002")
        connection = services.create_connection(
            identity=identity,
            environment="UIT",
            dip_base_url="https://dip.example",
            api_key="globex-dip-api-key-456",
        )
        services.create_channel(connection=connection, interface_id="IF-021", direction="outbound")
    return World(
        acme=acme,
        globex=globex,
        alice=Persona("alice", acme.id, alice),
        bob=Persona("bob", acme.id, bob),
        charlie=Persona("charlie", globex.id, charlie),
    )


@pytest.fixture
def world(db: None) -> World:
    """Two tenants with their people, identities, connections and channels (in the test's
    transaction, rolled back afterwards)."""
    return build_world()
