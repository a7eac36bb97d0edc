"""Attacks on the database itself, as the runtime role (what web and workers connect as).

Each test reproduces an attack a red-team review ran against the database and shows it refused:
every tenant table read, written and deleted with no tenant, a foreign tenant and garbage in
``app.tenant_id``; a temporary object shadowing what a SECURITY DEFINER function reads; session
settings surviving on a pooled connection; the read-only widening of ``app.user_id`` used to delete;
a tenant writing provider-level audit events; and rows pointing at another tenant's rows. Tables and
functions come from the catalog, so a new one is attacked too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, ProgrammingError, connection, connections, transaction
from psycopg import sql

from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from tenants import services
from tenants.models import DipIdentity
from tests.conftest import admin_conninfo, runtime_conninfo
from tests.tenants.test_isolation import populate

# What app.tenant_id holds in each attack: no tenant, a tenant that does not exist, garbage.
NOT_A_TENANT = ["", "not-a-uuid", str(uuid.UUID(int=1))]
# SQLSTATEs that mean "refused": insufficient_privilege (RLS or a missing grant) and
# invalid_text_representation (the policy's cast of a garbage tenant id).
REFUSED = {"42501", "22P02"}


@dataclass(frozen=True)
class TenantTable:
    name: str
    tenant_column: str  # "id" for tenants_tenant, else "tenant_id"


def tenant_tables() -> list[TenantTable]:
    """Every table in public holding a tenant's rows, from the catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'tenant_id' AND NOT a.attisdropped)
            ORDER BY 1
            """
        )
        names = [row[0] for row in cursor.fetchall()]
    return [
        TenantTable("tenants_tenant", "id"),
        *(TenantTable(name, "tenant_id") for name in names),
    ]


def set_tenant(cursor: object, value: str) -> None:
    cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [value])  # type: ignore[attr-defined]


def attempt(statement: str, params: list | None = None, *, tenant: str) -> tuple[str | None, int]:
    """Run ``statement`` with ``tenant`` in app.tenant_id, in a savepoint that is rolled back.

    Returns (SQLSTATE of the error or None, rows it returned or touched).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            set_tenant(cursor, tenant)
            cursor.execute(statement, params or [])
            rows = cursor.fetchone()[0] if cursor.description else cursor.rowcount
            raise _Rollback(rows)
    except _Rollback as done:
        return None, done.rows
    except DatabaseError as exc:
        return getattr(exc.__cause__, "sqlstate", None) or "?", 0


class _Rollback(Exception):
    """Ends a probe so its savepoint is rolled back; never escapes this module."""

    def __init__(self, rows: int) -> None:
        self.rows = rows


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fingerprint(table: TenantTable, tenant_id: object) -> tuple[int, str]:
    """What ``tenant_id`` sees of ``table``: row count and a digest of the rows."""
    with tenant_context(tenant_id), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
            f" FROM {q(table.name)} t"
        )
        return cursor.fetchone()


@pytest.fixture
def populated(world):
    return populate(world)


# --- every tenant table, every command, no tenant / foreign tenant / garbage ---------------------


def test_every_tenant_table_hides_its_rows_from_no_tenant_a_foreign_tenant_and_garbage(populated):
    world = populated
    acme = str(world.acme.id)
    tables = tenant_tables()
    assert len(tables) >= 12
    leaks = []
    for table in tables:
        col = q(table.tenant_column)
        for tenant in [*NOT_A_TENANT, str(world.globex.id)]:
            state, rows = attempt(
                f"SELECT count(*) FROM {q(table.name)} WHERE {col} = %s::uuid",
                [acme],
                tenant=tenant,
            )
            if state is None and rows:
                leaks.append((table.name, tenant, f"read {rows} of acme's rows"))
            if tenant in NOT_A_TENANT:
                state, rows = attempt(f"SELECT count(*) FROM {q(table.name)}", tenant=tenant)
                if state is None and rows:
                    leaks.append((table.name, tenant, f"read {rows} rows"))
    assert leaks == []


def test_every_tenant_table_refuses_writes_for_another_tenant(populated):
    world = populated
    acme, globex = str(world.acme.id), str(world.globex.id)
    tables = tenant_tables()
    before = {table.name: fingerprint(table, world.acme.id) for table in tables}
    # Attacks on an empty table prove nothing: populate() must give every tenant table acme rows.
    assert [name for name, (count, _digest) in before.items() if not count] == []
    accepted = []
    for table in tables:
        t, col = q(table.name), q(table.tenant_column)
        for tenant in [*NOT_A_TENANT, globex]:
            attacks = {
                "insert a row for acme": (f"INSERT INTO {t} ({col}) VALUES (%s::uuid)", [acme]),
                "update acme's rows": (
                    f"UPDATE {t} SET {col} = {col} WHERE {col} = %s::uuid",
                    [acme],
                ),
                "delete acme's rows": (f"DELETE FROM {t} WHERE {col} = %s::uuid", [acme]),
            }
            if tenant in NOT_A_TENANT:
                attacks["update every row"] = (f"UPDATE {t} SET {col} = {col}", [])
                attacks["delete every row"] = (f"DELETE FROM {t}", [])
            elif table.tenant_column == "tenant_id":
                # Moving one's own rows into another tenant.
                attacks["move own rows to acme"] = (f"UPDATE {t} SET {col} = %s::uuid", [acme])
            for name, (statement, params) in attacks.items():
                state, rows = attempt(statement, params, tenant=tenant)
                if name.startswith("insert"):
                    # RLS is checked before NOT NULL and unique constraints: it must be what refuses.
                    if state not in REFUSED:
                        accepted.append((table.name, tenant, name, state))
                elif state is None and rows:
                    accepted.append((table.name, tenant, name, f"{rows} rows"))
    assert accepted == [], "\n".join(map(str, accepted))
    assert {table.name: fingerprint(table, world.acme.id) for table in tables} == before


# --- SECURITY DEFINER functions and temporary objects --------------------------------------------


@pytest.fixture
def runtime_session(db: None) -> Iterator[psycopg.Connection]:
    """A fresh connection as the runtime role (a session's temporary schema, once made, outlives
    a revoked TEMPORARY, so these tests never reuse Django's connection)."""
    with psycopg.connect(runtime_conninfo()) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == settings.DB_RUNTIME_ROLE
        yield conn
        conn.rollback()


@pytest.fixture
def temporary_granted(db: None) -> Iterator[None]:
    """TEMPORARY given back to the runtime role for one test, to show the search_path pin holds
    on its own (defence in depth, should the grant ever come back)."""
    dbname = settings.DATABASES["default"]["NAME"]
    grant = sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
        sql.Identifier(dbname), sql.Identifier(settings.DB_RUNTIME_ROLE)
    )
    revoke = sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(
        sql.Identifier(dbname), sql.Identifier(settings.DB_RUNTIME_ROLE)
    )
    with psycopg.connect(admin_conninfo(dbname), autocommit=True) as admin:
        admin.execute(grant)
        try:
            yield
        finally:
            admin.execute(revoke)


def definer_functions(conn: psycopg.Connection) -> list[tuple[str, list[str], list[str] | None]]:
    """Every SECURITY DEFINER function in public: (name, argument types, proconfig)."""
    rows = conn.execute(
        """
        SELECT p.proname, coalesce(array(SELECT format_type(t, NULL)
                                         FROM unnest(p.proargtypes::oid[]) t), '{}'),
               p.proconfig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prosecdef ORDER BY 1
        """
    ).fetchall()
    return [(name, list(args), config) for name, args, config in rows]


SAMPLE_ARGUMENT = {
    "text": "'probe'",
    "character varying": "'probe'",
    "uuid": "gen_random_uuid()",
    "bigint": "1",
    "integer": "1",
    "boolean": "false",
}


def install_shadows(conn: psycopg.Connection) -> None:
    """The attack: a temporary view named like every table in public, each reading through a
    pg_temp function that notes who ran it. A definer function that resolves a table to pg_temp
    runs that function as its owner."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')"
        )
    ]
    for table in tables:
        shadow = sql.Identifier(f"shadow_{table}")
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION pg_temp.{shadow}() RETURNS SETOF public.{table}"
                " LANGUAGE plpgsql AS $$ BEGIN"
                " PERFORM set_config('attack.ran_as', current_user, false);"
                " RETURN QUERY SELECT * FROM public.{table}; END $$"
            ).format(shadow=shadow, table=sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("CREATE TEMP VIEW {table} AS SELECT * FROM pg_temp.{shadow}()").format(
                table=sql.Identifier(table), shadow=shadow
            )
        )


def call_each(conn: psycopg.Connection, functions: list) -> dict[str, str]:
    """Call every function; return who ran the shadows' code during each call ('' for nobody)."""
    ran_as = {}
    for name, args, _config in functions:
        values = [SAMPLE_ARGUMENT.get(arg, f"NULL::{arg}") for arg in args]
        conn.execute("SELECT set_config('attack.ran_as', '', false)")
        conn.execute(f"SELECT * FROM public.{q(name)}({', '.join(values)})").fetchall()
        ran_as[name] = conn.execute("SELECT current_setting('attack.ran_as', true)").fetchone()[0]
    return ran_as


def test_the_runtime_role_cannot_create_temporary_objects(runtime_session):
    for statement in (
        "CREATE TEMP TABLE probe (a int)",
        "CREATE TEMP VIEW probe AS SELECT 1",
        "CREATE FUNCTION pg_temp.probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            runtime_session.execute(statement)
        runtime_session.rollback()


def test_shadowing_attack_on_every_security_definer_function_is_refused(runtime_session):
    functions = definer_functions(runtime_session)
    assert {"busbar_find_api_credential", "busbar_resolve_webhook"} <= {f[0] for f in functions}
    try:
        install_shadows(runtime_session)
    except psycopg.errors.InsufficientPrivilege:
        runtime_session.rollback()  # refused at the first step: no TEMPORARY
        return
    owner_runs = {name: who for name, who in call_each(runtime_session, functions).items() if who}
    assert owner_runs == {}, "a temporary object ran inside a SECURITY DEFINER function"


def test_security_definer_functions_ignore_temporary_objects_even_with_temporary(
    temporary_granted, runtime_session
):
    functions = definer_functions(runtime_session)
    install_shadows(runtime_session)
    # The shadows are in place: an unqualified name now reaches them from the caller's session.
    runtime_session.execute("SELECT count(*) FROM tenants_channel").fetchone()
    assert runtime_session.execute("SELECT current_setting('attack.ran_as')").fetchone()[0] == (
        settings.DB_RUNTIME_ROLE
    )
    owner_runs = {name: who for name, who in call_each(runtime_session, functions).items() if who}
    assert owner_runs == {}, "a temporary object ran inside a SECURITY DEFINER function"


def test_every_security_definer_function_pins_search_path_with_pg_temp_last(runtime_session):
    functions = definer_functions(runtime_session)
    assert len(functions) >= 4
    unpinned = {}
    for name, _args, config in functions:
        paths = [c.split("=", 1)[1] for c in config or [] if c.startswith("search_path=")]
        schemas = [s.strip().strip('"') for s in paths[0].split(",")] if paths else None
        if schemas is None or (schemas != [""] and schemas[-1] != "pg_temp"):
            unpinned[name] = paths
    assert unpinned == {}


def test_another_sessions_query_text_is_out_of_reach(runtime_session):
    """Web and workers all connect as one role, and Django binds values into the query text, so a
    session that can read pg_stat_activity reads other tenants' requests as they run."""
    marker = f"tenant-secret-{uuid.uuid4().hex}"
    with psycopg.connect(runtime_conninfo(), autocommit=True) as other:
        other.execute(f"SELECT '{marker}'")  # its last query stays visible while it idles
        seen = []
        for probe in (
            "SELECT coalesce(string_agg(query, ' '), '') FROM pg_stat_activity",
            "SELECT coalesce(string_agg(query, ' '), '') FROM pg_stat_get_activity(NULL)",
            "SELECT coalesce(string_agg(pg_stat_get_backend_activity(b), ' '), '')"
            " FROM pg_stat_get_backend_idset() b",
        ):
            try:
                text = runtime_session.execute(probe).fetchone()[0]
            except psycopg.errors.InsufficientPrivilege:
                runtime_session.rollback()
                continue
            seen.append((probe, marker in text))
    assert seen == []


# --- pooled connections --------------------------------------------------------------------------


def test_a_pooled_connection_forgets_session_settings_before_its_next_use(django_db_blocker):
    """One pooled connection, two uses: what the first set for its session is gone in the second.

    Outside a test transaction (the pool lends connections in autocommit, as in production).
    """
    with django_db_blocker.unblock():
        _use_a_pooled_connection_twice()


def _use_a_pooled_connection_twice() -> None:
    tenant = str(uuid.uuid4())
    options = {**settings.DATABASES["default"]["OPTIONS"]}
    assert "pool" in options, "the runtime role's connections are pooled"
    options["pool"] = {**options["pool"], "min_size": 1, "max_size": 1}
    probe_alias = "pool_reset_probe"
    # A connection of its own with a pool of one (django.contrib.postgres looks every new
    # connection up by alias, so it is registered with Django's handler for the test).
    connections.settings[probe_alias] = {**connections.settings["default"], "OPTIONS": options}
    probe = connections[probe_alias]
    try:
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT pg_backend_pid(), set_config('app.tenant_id', %s, false)",
                [tenant],
            )
            first_pid = cursor.fetchone()[0]
            cursor.execute("SET app.user_id = '42'")
            cursor.execute("SET statement_timeout = '1s'")
        probe.close()  # back to the pool, as at the end of a request
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT pg_backend_pid(), current_setting('app.tenant_id', true),"
                " current_setting('app.user_id', true), current_setting('statement_timeout'),"
                " current_setting('TimeZone')"
            )
            pid, tenant, user, timeout, zone = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM tenants_tenant")
            visible = cursor.fetchone()[0]
    finally:
        probe.close()
        probe.close_pool()
        del connections[probe_alias]
        del connections.settings[probe_alias]
    assert pid == first_pid, "the pool should have lent the same connection again"
    assert (tenant or "", user or "", timeout, visible) == ("", "", "0", 0)
    assert zone == "UTC"  # Django's own session configuration survives the reset


# --- app.user_id widens SELECT only --------------------------------------------------------------


def test_own_memberships_are_readable_but_not_deletable_with_only_a_user_set(world):
    alice = str(world.alice.user.id)
    acme = str(world.acme.id)

    def as_alice(statement: str, params: list) -> tuple[str | None, int]:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                set_tenant(cursor, "")
                cursor.execute("SELECT set_config('app.user_id', %s, true)", [alice])
                cursor.execute(statement, params)
                rows = cursor.fetchone()[0] if cursor.description else cursor.rowcount
                raise _Rollback(rows)
        except _Rollback as done:
            return None, done.rows
        except DatabaseError as exc:
            return getattr(exc.__cause__, "sqlstate", None) or "?", 0

    # The widening still does its job: alice sees her membership and its tenant.
    assert as_alice("SELECT count(*) FROM tenants_membership WHERE user_id = %s", [alice]) == (
        None,
        1,
    )
    assert as_alice("SELECT count(*) FROM tenants_tenant WHERE id = %s", [acme]) == (None, 1)
    for statement, params in (
        ("DELETE FROM tenants_membership WHERE user_id = %s", [alice]),
        ("UPDATE tenants_membership SET roles = '{tenant_admin}' WHERE user_id = %s", [alice]),
        ("DELETE FROM tenants_tenant WHERE id = %s", [acme]),
        ("UPDATE tenants_tenant SET name = 'taken over' WHERE id = %s", [acme]),
    ):
        state, rows = as_alice(statement, params)
        assert (state in REFUSED) or rows == 0, statement


# --- provider-level audit events ------------------------------------------------------------------


def test_a_tenant_context_cannot_write_a_tenantless_audit_event(world):
    with (
        tenant_context(world.acme.id),
        pytest.raises(ProgrammingError, match="row-level security"),
        transaction.atomic(),
    ):
        AuditEvent.objects.create(tenant_id=None, actor="pytest", action="provider.forged")
    with (
        tenant_context(world.acme.id),
        pytest.raises(ProgrammingError, match="row-level security"),
        transaction.atomic(),
    ):
        AuditEvent.objects.create(tenant_id=world.globex.id, actor="pytest", action="globex.forged")


def test_a_tenantless_audit_event_is_written_with_no_tenant_context(world):
    event = record_event(action="login.failed", actor="nobody", category="security")
    assert event.tenant_id is None
    with tenant_context(world.acme.id):
        record_event(action="acme.event", actor="pytest")
        assert AuditEvent.objects.filter(action="acme.event").count() == 1


# --- references across tenants --------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    table: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]


def tenant_references() -> list[Reference]:
    """Every foreign key from a tenant table to a tenant table, from the catalog."""
    tables = {t.name: t.tenant_column for t in tenant_tables()}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.conrelid::regclass::text, c.confrelid::regclass::text,
                   array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                         ORDER BY k.i),
                   array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                         ORDER BY k.i)
            FROM pg_constraint c
            WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
              AND c.conparentid = 0
            """
        )
        rows = cursor.fetchall()
    return [
        Reference(table, tuple(cols), target, tuple(target_cols))
        for table, target, cols, target_cols in rows
        if table in tables and target in tables
    ]


# References checked by a trigger instead of a foreign key (messaging migrations 0021, 0022 and
# 0025: keys checked row by row cost more per received message than the rest of its storing, and
# most of a state move). Each refuses like a foreign key (23503), so the attack below covers them
# alike.
TRIGGER_CHECKED = [
    *(
        Reference(table, ("tenant_id", "message_id"), "messaging_message", ("tenant_id", "id"))
        for table in ("messaging_transition", "messaging_finding")
    ),
    Reference("messaging_message", ("tenant_id", "raw_id"), "messaging_raw", ("tenant_id", "id")),
    Reference(
        "messaging_message", ("tenant_id", "source_raw_id"), "messaging_raw", ("tenant_id", "id")
    ),
    *(
        Reference(table, ("tenant_id", column), target, ("tenant_id", "id"))
        for table in ("messaging_message", "messaging_raw")
        for column, target in (
            ("connection_id", "tenants_connection"),
            ("channel_id", "tenants_channel"),
        )
    ),
]


def test_the_trigger_checked_references_have_their_triggers(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
            " WHERE tgrelid IN ('messaging_message'::regclass, 'messaging_raw'::regclass,"
            " 'messaging_inbound_key'::regclass, 'tenants_connection'::regclass,"
            " 'tenants_channel'::regclass, 'messaging_transition'::regclass,"
            " 'messaging_finding'::regclass)"
            " AND tgname ~ '_(raw|parents|tenant)_(inserted|updated)$|_named$'"
            " AND tgenabled = 'O'"
        )
        names = sorted(cursor.fetchall())
    assert names == [
        ("messaging_finding", "messaging_finding_message_named"),
        ("messaging_inbound_key", "messaging_inbound_key_tenant_inserted"),
        ("messaging_message", "messaging_message_raw_inserted"),
        ("messaging_message", "messaging_message_raw_updated"),
        ("messaging_raw", "messaging_raw_parents_inserted"),
        ("messaging_raw", "messaging_raw_parents_updated"),
        ("messaging_transition", "messaging_transition_message_named"),
        ("tenants_channel", "tenants_channel_named"),
        ("tenants_connection", "tenants_connection_named"),
    ]


def test_every_reference_between_tenant_tables_includes_the_tenant(db):
    tenant_column = {t.name: t.tenant_column for t in tenant_tables()}
    references = tenant_references()
    composite = {
        (ref.table, ref.target, pair)
        for ref in references
        for pair in zip(ref.columns, ref.target_columns, strict=True)
        if dict(zip(ref.columns, ref.target_columns, strict=True)).get(tenant_column[ref.table])
        == tenant_column[ref.target]
    }
    uncovered = sorted(
        f"{ref.table}.{column} -> {ref.target}.{target_column}"
        for ref in references
        for column, target_column in zip(ref.columns, ref.target_columns, strict=True)
        if column != tenant_column[ref.table]
        and (ref.table, ref.target, (column, target_column)) not in composite
    )
    assert len(references) >= 8
    assert uncovered == [], "add core.db.TenantForeignKey for each"


def test_no_tenant_row_can_point_at_another_tenants_row(populated):
    world = populated
    tenant_column = {t.name: t.tenant_column for t in tenant_tables()}
    pointers = sorted(
        {
            (ref.table, column, ref.target, target_column)
            for ref in tenant_references() + TRIGGER_CHECKED
            for column, target_column in zip(ref.columns, ref.target_columns, strict=True)
            if column != tenant_column[ref.table]
        }
    )
    assert len(pointers) >= 8
    with tenant_context(world.globex.id):
        # Fresh globex rows nobody holds a permission on, so no unique key (user, permission,
        # object) is hit before the reference is checked.
        identity = DipIdentity.objects.get()
        spare = services.create_connection(
            identity=identity, environment="PRD", dip_base_url="https://dip.example"
        )
        services.create_channel(connection=spare, interface_id="IF-036", direction="inbound")
    accepted, untested = [], []
    for table, column, target, target_column in pointers:
        with tenant_context(world.globex.id), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {q(target_column)} FROM {q(target)} ORDER BY {q(target_column)} DESC LIMIT 1"
            )
            foreign = cursor.fetchone()
        with tenant_context(world.acme.id), connection.cursor() as cursor:
            cursor.execute(f"SELECT to_jsonb(t) FROM {q(table)} t LIMIT 1")
            own = cursor.fetchone()
        if foreign is None or own is None:
            untested.append(table)
            continue
        acme = str(world.acme.id)
        # Re-point acme's own row, and insert a copy of it (fresh id, fresh unique values)
        # pointing at globex's row.
        original = json.loads(own[0])
        copy = {**original, column: foreign[0]}
        if "id" in copy:
            copy["id"] = _fresh_id(table)
        for unique in _unique_text_columns(table):
            if copy.get(unique):
                copy[unique] = copy[unique][:-8] + uuid.uuid4().hex[:8]
        # other unique uuids and numbers (an event's uid and feed position): fresh ones
        # (not references: a guardian row's permission and user keep theirs)
        for unique in _unique_columns(
            table, "'uuid'::regtype, 'int4'::regtype, 'int8'::regtype", references=False
        ):
            if copy.get(unique) is not None and unique not in (tenant_column[table], column, "id"):
                copy[unique] = _fresh_id(table, unique)
        insert = (
            f"INSERT INTO {q(table)} SELECT (jsonb_populate_record(NULL::{q(table)}, %s::jsonb)).*"
        )
        for name, statement, params in (
            (
                "update",
                f"UPDATE {q(table)} t SET {q(column)} = %s WHERE to_jsonb(t) = %s::jsonb",
                [foreign[0], own[0]],
            ),
            ("insert", insert, [json.dumps(copy, default=str)]),
        ):
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    set_tenant(cursor, acme)
                    cursor.execute(statement, params)
                    # Django's own keys are deferred to commit; check everything now.
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                    accepted.append(f"{name} {table}.{column} -> {target} of globex")
                    raise _Rollback(0)
            except _Rollback:
                pass
            except DatabaseError as exc:
                state = getattr(exc.__cause__, "sqlstate", None)
                # foreign_key_violation is the refusal this is about; an append-only table
                # refuses the update before (insufficient_privilege), its insert still counts.
                if state != "23503" and not (name == "update" and state == "42501"):
                    accepted.append(f"{name} {table}.{column}: {state} {exc}")
    assert untested == [], "give acme and globex rows in these tables (tests/tenants/populate)"
    assert accepted == [], "\n".join(map(str, accepted))


def _unique_text_columns(table: str) -> list[str]:
    # tokens and the like, not codes such as an environment's
    return _unique_columns(
        table,
        "'text'::regtype, 'varchar'::regtype) AND (a.atttypmod = -1 OR a.atttypmod - 4 >= 16",
    )


def _unique_columns(table: str, types: str, *, references: bool = True) -> list[str]:
    """Columns of ``table`` in a unique index whose type is one of ``types`` (SQL, trusted),
    without those of a foreign key unless ``references``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisunique"
            f" AND a.atttypid IN ({types})"
            " AND (%s OR NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.contype = 'f'"
            " AND c.conrelid = i.indrelid AND a.attnum = ANY (c.conkey)))",
            [table, references],
        )
        return [row[0] for row in cursor.fetchall()]


def _fresh_id(table: str, column: str = "id") -> str:
    """A value of ``column`` no row has: the column's default when it has one (the store's
    time-ordered ids, which must fall in a partition), else a random one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(a.atttypid, NULL), pg_get_expr(d.adbin, d.adrelid)"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d"
            " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s::regclass AND a.attname = %s",
            [table, column],
        )
        kind, default = cursor.fetchone()
        if default:
            cursor.execute(f"SELECT ({default})::text")
            return cursor.fetchone()[0]
    return (
        str(uuid.uuid4()) if kind == "uuid" else str(9_000_000_000_000 + uuid.uuid4().int % 10**9)
    )


# --- what the runtime role holds outside row-level security ---------------------------------------

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
READ_WRITE = {"SELECT", "INSERT", "UPDATE", "DELETE"}
# Tables the runtime role may not fully write, and why.
REDUCED = {
    "core_auditevent": {"SELECT", "INSERT"},  # append-only
    "messaging_raw": {"SELECT", "INSERT"},  # immutable bytes
    "messaging_transition": {"SELECT", "INSERT"},  # append-only timeline
    "messaging_finding": {"SELECT", "INSERT"},  # append-only
    "messaging_inbound_key": {"SELECT", "INSERT"},  # dedupe keys, written once
    "messaging_message": {"SELECT", "INSERT"},  # plus UPDATE of its work columns, never DELETE
    "messaging_dipexchange": {"SELECT", "INSERT"},  # the record of every call to the DIP
    # the evidence ledger: seals, their entries and verification runs are appended, never edited
    "messaging_seal": {"SELECT", "INSERT"},
    "messaging_seal_leaf": {"SELECT", "INSERT"},
    "messaging_ledger_check": {"SELECT", "INSERT"},
    # audit archives are recorded, then only marked purged (the column grant below)
    "messaging_audit_archive": {"SELECT", "INSERT"},
    # the DIP specification registry: only the owner (import_dip_spec) writes it
    "messaging_specversion": {"SELECT"},
    "messaging_specschema": {"SELECT"},
    "django_migrations": {"SELECT"},  # readiness compares it; only migrations write it
    "django_content_type": {"SELECT"},  # written by migrations (post_migrate) only
    "auth_permission": {"SELECT"},  # written by migrations (post_migrate) only
    # break-glass grants are evidence: recorded, then only ended (a column grant), never rewritten
    "messaging_breakglassgrant": {"SELECT", "INSERT"},
}
# The columns of messaging_message the runtime role may UPDATE (the store's migration names them).
MESSAGE_COLUMNS = sorted(
    [
        *("state", "attempts", "lease_until", "next_attempt_at", "state_changed_at"),
        *("last_error", "swept_at"),
        "replayed_at",  # the mark a replay leaves (messaging.replay)
        # written once
        *("raw_id", "raw_offset", "raw_length", "sha256", "transaction_id"),
        "sender_unique_reference",
    ]
)
# SECURITY DEFINER functions the runtime role may call; a new one is reviewed and added here.
DEFINER_FUNCTIONS = {
    "busbar_active_tenant_ids",
    "busbar_ensure_partitions",  # fixed DDL only: the store's monthly partitions
    "busbar_dip_id_registered",
    "busbar_find_api_credential",
    # blanks raw payloads past the caller's tenant's retention, nothing else (RLS forced on the
    # owner too, so only the tenant in context; hashes stay, so seals still verify)
    "busbar_purge_payloads",
    # deletes an archived month from the caller's tenant's audit log, only when an archive row
    # holds exactly its events and the month ended at least 92 days ago
    "busbar_release_archived_audit",
    "busbar_resolve_webhook",
    # the delivery sweeper's one cross-tenant question: tenant ids with deliveries due, no rows
    "busbar_tenants_with_due_deliveries",
}


def test_the_runtime_role_holds_only_what_it_needs(db):
    role = settings.DB_RUNTIME_ROLE
    with connection.cursor() as cursor:

        def rows(statement: str, params: list | None = None) -> list:
            cursor.execute(statement, [role] if params is None else params)
            return cursor.fetchall()

        holds: dict[str, object] = {}
        holds["attributes"] = rows(
            "SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
            " rolreplication, rolbypassrls FROM pg_roles WHERE rolname = %s"
        )
        holds["member of"] = rows(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s"
        )
        holds["database"] = rows(
            "SELECT p FROM unnest(ARRAY['CREATE', 'CONNECT', 'TEMPORARY']) p"
            " WHERE has_database_privilege(%s, current_database(), p)"
        )
        holds["schemas"] = rows(
            "SELECT n.nspname, p FROM pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) p"
            " WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'"
            " AND has_schema_privilege(%s, n.oid, p) ORDER BY 1, 2"
        )
        holds["sequences"] = rows(
            "SELECT c.relname, p FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p"
            " WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace"
            " AND has_sequence_privilege(%s, c.oid, p) ORDER BY 1, 2"
        )
        holds["owns"] = rows(
            "SELECT 'relation ' || c.relname FROM pg_class c WHERE c.relowner = %s::regrole"
            " UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proowner = %s::regrole"
            " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = %s::regrole",
            [role, role, role],
        )
        holds["definer functions"] = rows(
            "SELECT p.proname FROM pg_proc p WHERE p.prosecdef"
            " AND p.pronamespace = 'public'::regnamespace"
            " AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1"
        )
        holds["definer functions for PUBLIC"] = rows(
            "SELECT p.proname FROM pg_proc p, aclexplode(coalesce(p.proacl,"
            " acldefault('f', p.proowner))) a WHERE p.prosecdef AND a.grantee = 0"
            " AND p.pronamespace = 'public'::regnamespace",
            [],
        )
        holds["column grants"] = rows(
            "SELECT DISTINCT c.relname, x.privilege_type, a.attname::text FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid, aclexplode(a.attacl) x"
            " WHERE c.relnamespace = 'public'::regnamespace AND x.grantee = %s::regrole"
            " ORDER BY 1, 2, 3"
        )
        tables = rows(
            "SELECT c.relname, p FROM pg_class c, unnest(%s::text[]) p"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm') AND c.relnamespace = 'public'::regnamespace"
            " AND NOT c.relispartition AND has_table_privilege(%s, c.oid, p)",
            [list(TABLE_PRIVILEGES), role],
        )
    table_privileges: dict[str, set[str]] = {}
    for name, privilege in tables:
        table_privileges.setdefault(name, set()).add(privilege)

    assert holds == {
        # not superuser, inherits, no CREATEROLE/CREATEDB, logs in, no replication, no BYPASSRLS
        "attributes": [(False, True, False, False, True, False, False)],
        "member of": [],
        "database": [("CONNECT",)],
        "schemas": [("public", "USAGE")],
        # busbar_next_id() draws from it (identity columns need nothing)
        "sequences": [("busbar_id_seq", "USAGE")],
        "owns": [],
        "definer functions": [(name,) for name in sorted(DEFINER_FUNCTIONS)],
        "definer functions for PUBLIC": [],
        # a message's work columns, and the columns an outbound message gets once after it is
        # created (its bytes, the DIP's transaction id); a trigger refuses a second write of those
        # and when an audit archive's file was purged, and the end of a break-glass grant (its
        # only change once recorded)
        "column grants": [
            ("messaging_audit_archive", "UPDATE", "purged_at"),
            ("messaging_breakglassgrant", "UPDATE", "ended_at"),
            ("messaging_breakglassgrant", "UPDATE", "ended_by"),
            *(("messaging_message", "UPDATE", column) for column in MESSAGE_COLUMNS),
        ],
    }
    too_much = {
        name: sorted(held - REDUCED.get(name, READ_WRITE))
        for name, held in table_privileges.items()
        if held - REDUCED.get(name, READ_WRITE)
    }
    assert too_much == {}
    assert set(REDUCED) <= set(table_privileges), "a reduced table no longer exists"
