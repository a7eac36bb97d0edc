"""A provider-level (tenant-less) audit event may be written only with no tenant context.

Before, the policy's WITH CHECK let any tenant context insert an event with no tenant, which the
support page shows as a genuine provider-level event.
"""

from __future__ import annotations

from django.db import migrations

from core.db import CURRENT_TENANT_SQL

OLD_CHECK = f"tenant_id = {CURRENT_TENANT_SQL} OR tenant_id IS NULL"
NEW_CHECK = (
    f"tenant_id = {CURRENT_TENANT_SQL} OR (tenant_id IS NULL AND {CURRENT_TENANT_SQL} IS NULL)"
)


def policy(check: str) -> list[str]:
    return [
        "DROP POLICY IF EXISTS tenant_isolation ON core_auditevent",
        "CREATE POLICY tenant_isolation ON core_auditevent"
        f" USING (tenant_id = {CURRENT_TENANT_SQL}) WITH CHECK ({check})",
    ]


class Migration(migrations.Migration):
    dependencies = [("core", "0004_runtime_role_least_privilege")]

    operations = [migrations.RunSQL(policy(NEW_CHECK), policy(OLD_CHECK))]
