"""The DIP exchange log can point only at a connection of its own tenant (see core.db's
TenantForeignKey: a plain foreign key is checked past row-level security)."""

from __future__ import annotations

from django.db import migrations

from core.db import TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0001_initial"),
        ("tenants", "0010_same_tenant_foreign_keys"),
    ]

    operations = [
        TenantForeignKey("messaging_dipexchange", "connection_id", "tenants_connection"),
    ]
