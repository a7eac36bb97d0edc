"""Every reference from one tenant row to another stays inside the tenant, in the database itself.

PostgreSQL checks a foreign key as the referenced table's owner, past row-level security, so the
plain keys accepted another tenant's id. Each reference gets a composite key (tenant_id, x_id) ->
target (tenant_id, id).
"""

from __future__ import annotations

from django.db import migrations

from core.db import TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [("tenants", "0009_read_widening_for_select_only")]

    operations = [
        TenantForeignKey("tenants_connection", "identity_id", "tenants_dipidentity"),
        TenantForeignKey("tenants_channel", "connection_id", "tenants_connection"),
        TenantForeignKey("tenants_certificate", "connection_id", "tenants_connection"),
        TenantForeignKey(
            "tenants_connectionuserobjectpermission", "content_object_id", "tenants_connection"
        ),
        TenantForeignKey(
            "tenants_connectiongroupobjectpermission", "content_object_id", "tenants_connection"
        ),
        TenantForeignKey(
            "tenants_channeluserobjectpermission", "content_object_id", "tenants_channel"
        ),
        TenantForeignKey(
            "tenants_channelgroupobjectpermission", "content_object_id", "tenants_channel"
        ),
    ]
