"""Database plumbing: the migration router and the one operation that puts a table under RLS."""

from __future__ import annotations

from django.conf import settings
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

# The policy reads the tenant from a transaction-local setting. current_setting(..., true) returns
# '' (not NULL) once the setting has been used in a session, hence nullif. The sub-select makes
# PostgreSQL evaluate it once per statement instead of once per row.
CURRENT_TENANT_SQL = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
CURRENT_USER_SQL = "(SELECT nullif(current_setting('app.user_id', true), '')::bigint)"


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
    chosen); writes are always checked against the tenant alone.
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
        match = f'"{self.column}" = {CURRENT_TENANT_SQL}'
        using = f"{match} OR ({self.extra_using})" if self.extra_using else match
        statements = [
            f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {t} USING ({using}) WITH CHECK ({match})",
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
