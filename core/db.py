"""Database plumbing: the migration router and the operations that put a table under RLS and keep
foreign keys inside one tenant."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

# The policy reads the tenant from a transaction-local setting. current_setting(..., true) returns
# '' (not NULL) once the setting has been used in a session, hence nullif. The sub-select makes
# PostgreSQL evaluate it once per statement instead of once per row.
CURRENT_TENANT_SQL = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
CURRENT_USER_SQL = "(SELECT nullif(current_setting('app.user_id', true), '')::bigint)"


def tenant_policy_sql(table: str, *, column: str = "tenant_id", extra_using: str = "") -> list[str]:
    """The policies that confine ``table`` to the current tenant.

    ``tenant_isolation`` governs every command, for reading and for writing, by the tenant alone.
    ``extra_using`` becomes a separate ``FOR SELECT`` policy: permissive policies are OR-ed per
    command, so it widens what a SELECT sees and nothing else (an UPDATE or DELETE still needs the
    tenant match, whatever its WHERE clause reads).
    """
    t = f'"{table}"'
    match = f'"{column}" = {CURRENT_TENANT_SQL}'
    statements = [f"CREATE POLICY tenant_isolation ON {t} USING ({match}) WITH CHECK ({match})"]
    if extra_using:
        statements.append(f"CREATE POLICY read_widening ON {t} FOR SELECT USING ({extra_using})")
    return statements


def _identifier(*parts: str) -> str:
    """A name under PostgreSQL's 63-byte limit, shortened with a hash when it would be cut."""
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


class OwnerMigratesRouter:
    """Migrations run only through the ``owner`` alias; the runtime role owns nothing."""

    def allow_migrate(self, db: str, app_label: str, **hints: object) -> bool:
        return db == "owner"


class EnableTenantRLS(Operation):
    """Enable and force row-level security on ``table`` with one tenant policy.

    ``column`` is compared with the current tenant for every command (USING and WITH CHECK). With
    ``support_columns`` the support role may SELECT those columns of every tenant's rows (metadata
    only: payload and secret columns are simply left out of the list, so the grant refuses them).
    ``extra_using`` widens reads only (for example a user's own memberships before a tenant is
    chosen), as a policy of its own ``FOR SELECT``; writes, updates and deletes are always checked
    against the tenant alone.
    """

    reversible = True
    reduces_to_sql = True

    def __init__(
        self,
        table: str,
        *,
        column: str = "tenant_id",
        support_columns: list[str] | tuple[str, ...] = (),
        extra_using: str = "",
    ) -> None:
        self.table = table
        self.column = column
        self.support_columns = list(support_columns)
        self.extra_using = extra_using

    def state_forwards(self, app_label: str, state: object) -> None:
        pass

    def describe(self) -> str:
        return f"Enable tenant row-level security on {self.table}"

    def deconstruct(self) -> tuple[str, list, dict]:
        kwargs: dict = {"column": self.column}
        if self.support_columns:
            kwargs["support_columns"] = self.support_columns
        if self.extra_using:
            kwargs["extra_using"] = self.extra_using
        return (self.__class__.__name__, [self.table], kwargs)

    def forward_sql(self) -> list[str]:
        t = f'"{self.table}"'
        statements = [
            f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY",
            *tenant_policy_sql(self.table, column=self.column, extra_using=self.extra_using),
        ]
        if self.support_columns:
            role = settings.DB_SUPPORT_ROLE
            columns = ", ".join(f'"{c}"' for c in self.support_columns)
            statements += [
                f'CREATE POLICY support_metadata ON {t} FOR SELECT TO "{role}" USING (true)',
                f'GRANT SELECT ({columns}) ON {t} TO "{role}"',
            ]
        return statements

    def backward_sql(self) -> list[str]:
        t = f'"{self.table}"'
        statements = [
            f"DROP POLICY IF EXISTS support_metadata ON {t}",
            f"DROP POLICY IF EXISTS read_widening ON {t}",
            f"DROP POLICY IF EXISTS tenant_isolation ON {t}",
            f"ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY",
        ]
        if self.support_columns:
            statements.insert(0, f'REVOKE ALL ON {t} FROM "{settings.DB_SUPPORT_ROLE}"')
        return statements

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for statement in self.forward_sql():
            schema_editor.execute(statement)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for statement in self.backward_sql():
            schema_editor.execute(statement)


class _SQLOperation(Operation):
    """An operation that is a list of SQL statements each way and changes no model state."""

    reversible = True
    reduces_to_sql = True

    def state_forwards(self, app_label: str, state: object) -> None:
        pass

    def forward_sql(self) -> list[str]:
        raise NotImplementedError

    def backward_sql(self) -> list[str]:
        raise NotImplementedError

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for statement in self.forward_sql():
            schema_editor.execute(statement)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for statement in self.backward_sql():
            schema_editor.execute(statement)


class RewriteTenantPolicy(_SQLOperation):
    """Replace ``table``'s tenant policies with what ``EnableTenantRLS`` writes today.

    For tables put under RLS when ``extra_using`` was still OR-ed into the one policy that also
    governed UPDATE and DELETE; running it on a table that already has the new form is harmless.
    """

    def __init__(self, table: str, *, column: str = "tenant_id", extra_using: str = "") -> None:
        self.table = table
        self.column = column
        self.extra_using = extra_using

    def describe(self) -> str:
        return f"Rewrite the tenant policies of {self.table}"

    def deconstruct(self) -> tuple[str, list, dict]:
        kwargs: dict = {"column": self.column}
        if self.extra_using:
            kwargs["extra_using"] = self.extra_using
        return (self.__class__.__name__, [self.table], kwargs)

    def _drop(self) -> list[str]:
        t = f'"{self.table}"'
        return [
            f"DROP POLICY IF EXISTS read_widening ON {t}",
            f"DROP POLICY IF EXISTS tenant_isolation ON {t}",
        ]

    def forward_sql(self) -> list[str]:
        return self._drop() + tenant_policy_sql(
            self.table, column=self.column, extra_using=self.extra_using
        )

    def backward_sql(self) -> list[str]:
        t = f'"{self.table}"'
        match = f'"{self.column}" = {CURRENT_TENANT_SQL}'
        using = f"{match} OR ({self.extra_using})" if self.extra_using else match
        return [
            *self._drop(),
            f"CREATE POLICY tenant_isolation ON {t} USING ({using}) WITH CHECK ({match})",
        ]


class TenantForeignKey(_SQLOperation):
    """Make ``table.column`` able to point only at a row of ``target_table`` of the same tenant.

    Row-level security does not cover foreign keys: PostgreSQL checks a reference as the owner of
    the referenced table, past its policies, so a plain ``FOREIGN KEY (x_id) REFERENCES target (id)``
    accepts another tenant's id. This adds ``FOREIGN KEY (tenant_id, x_id) REFERENCES target
    (tenant_id, id)``, and the UNIQUE (tenant_id, id) index on the target that it needs (unless the
    target already has a unique index on exactly those columns, e.g. its primary key). The model's
    own foreign key stays, so Django's migration state is untouched.

    The constraint is DEFERRABLE INITIALLY IMMEDIATE: checked at the end of each statement, yet
    deferrable like Django's own foreign keys when a loader asks for ``SET CONSTRAINTS ALL
    DEFERRED``. Works for partitioned tables on either side (a partitioned target's key includes
    its partition column ``id``).
    """

    def __init__(
        self,
        table: str,
        column: str,
        target_table: str,
        *,
        tenant_column: str = "tenant_id",
        target_column: str = "id",
        target_tenant_column: str = "tenant_id",
    ) -> None:
        self.table = table
        self.column = column
        self.target_table = target_table
        self.tenant_column = tenant_column
        self.target_column = target_column
        self.target_tenant_column = target_tenant_column

    @property
    def constraint_name(self) -> str:
        return _identifier(self.table, self.column, "same_tenant")

    @property
    def index_name(self) -> str:
        return _identifier(self.target_table, "tenant_key")

    def describe(self) -> str:
        return f"Keep {self.table}.{self.column} inside its tenant"

    def deconstruct(self) -> tuple[str, list, dict]:
        kwargs: dict = {}
        defaults = {
            "tenant_column": "tenant_id",
            "target_column": "id",
            "target_tenant_column": "tenant_id",
        }
        for name, default in defaults.items():
            if getattr(self, name) != default:
                kwargs[name] = getattr(self, name)
        return (self.__class__.__name__, [self.table, self.column, self.target_table], kwargs)

    def forward_sql(self) -> list[str]:
        target, tt, tc = self.target_table, self.target_tenant_column, self.target_column
        # A unique index on exactly {tenant, id}, in either order, already serves.
        ensure_key = f"""
        DO $$
        BEGIN
            IF NOT EXISTS (
                SELECT 1 FROM pg_index i
                WHERE i.indrelid = '"{target}"'::regclass AND i.indisunique
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 2
                  AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                       FROM pg_attribute a
                       WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                      = (SELECT array_agg(x ORDER BY x) FROM unnest(ARRAY['{tt}', '{tc}']) x)
            ) THEN
                CREATE UNIQUE INDEX "{self.index_name}" ON "{target}" ("{tt}", "{tc}");
            END IF;
        END $$
        """
        return [
            ensure_key,
            f'ALTER TABLE "{self.table}" ADD CONSTRAINT "{self.constraint_name}"'
            f' FOREIGN KEY ("{self.tenant_column}", "{self.column}")'
            f' REFERENCES "{target}" ("{tt}", "{tc}")'
            " DEFERRABLE INITIALLY IMMEDIATE",
        ]

    def backward_sql(self) -> list[str]:
        return [
            f'ALTER TABLE "{self.table}" DROP CONSTRAINT IF EXISTS "{self.constraint_name}"',
            # Another table's same-tenant key may still lean on the index.
            f"""
            DO $$
            BEGIN
                DROP INDEX IF EXISTS "{self.index_name}";
            EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
            END $$
            """,
        ]
