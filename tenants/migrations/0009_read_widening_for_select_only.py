"""A user's own memberships (and their tenants) are visible before a tenant is chosen, for SELECT
only: the widening was part of the one policy that also governs UPDATE and DELETE, so a statement
with just ``app.user_id`` set could delete a person's memberships and tenants elsewhere."""

from __future__ import annotations

from django.db import migrations

from core.db import CURRENT_USER_SQL, RewriteTenantPolicy


class Migration(migrations.Migration):
    dependencies = [("tenants", "0008_lookup_functions_pin_search_path")]

    operations = [
        RewriteTenantPolicy(
            "tenants_tenant",
            column="id",
            extra_using=(
                "id IN (SELECT m.tenant_id FROM tenants_membership m"
                f" WHERE m.user_id = {CURRENT_USER_SQL})"
            ),
        ),
        RewriteTenantPolicy("tenants_membership", extra_using=f"user_id = {CURRENT_USER_SQL}"),
    ]
