"""The audit log is append-only and tenant-scoped; security events without a tenant are support's."""

from __future__ import annotations

from django.conf import settings
from django.db import migrations

from core.db import CURRENT_TENANT_SQL


def forward_sql() -> list[str]:
    runtime, support = settings.DB_RUNTIME_ROLE, settings.DB_SUPPORT_ROLE
    return [
        "ALTER TABLE core_auditevent ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE core_auditevent FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON core_auditevent USING (tenant_id = {CURRENT_TENANT_SQL})"
        f" WITH CHECK (tenant_id = {CURRENT_TENANT_SQL} OR tenant_id IS NULL)",
        f'CREATE POLICY support_metadata ON core_auditevent FOR SELECT TO "{support}" USING (true)',
        f'GRANT SELECT ON core_auditevent TO "{support}"',
        f'REVOKE UPDATE, DELETE, TRUNCATE ON core_auditevent FROM "{runtime}"',
        """
        CREATE FUNCTION busbar_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('app.retention_purge', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON core_auditevent"
        " FOR EACH ROW EXECUTE FUNCTION busbar_refuse_change()",
    ]


BACKWARD = [
    "DROP TRIGGER IF EXISTS audit_append_only ON core_auditevent",
    "DROP FUNCTION IF EXISTS busbar_refuse_change()",
    "DROP POLICY IF EXISTS support_metadata ON core_auditevent",
    "DROP POLICY IF EXISTS tenant_isolation ON core_auditevent",
    "ALTER TABLE core_auditevent NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE core_auditevent DISABLE ROW LEVEL SECURITY",
]


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunSQL(forward_sql(), BACKWARD)]
