"""Messaging rows can point only at connections and channels of their own tenant (see core.db's
TenantForeignKey: a plain foreign key is checked past row-level security, so these accepted another
tenant's connection or channel id)."""

from __future__ import annotations

from django.db import migrations

from core.db import TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0002_message_store"),
        ("tenants", "0010_same_tenant_foreign_keys"),
    ]

    operations = [
        TenantForeignKey("messaging_dipexchange", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_raw", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_raw", "channel_id", "tenants_channel"),
        TenantForeignKey("messaging_message", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_message", "channel_id", "tenants_channel"),
        TenantForeignKey("messaging_flow_rollup", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_state_count", "connection_id", "tenants_connection"),
    ]
