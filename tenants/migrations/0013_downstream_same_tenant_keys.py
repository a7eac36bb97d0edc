"""A downstream endpoint's secrets can belong only to an endpoint of their own tenant (see
core.db's TenantForeignKey: the plain key from 0012 is checked past row-level security, so it
accepted another tenant's endpoint id)."""

from __future__ import annotations

from django.db import migrations

from core.db import TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [("tenants", "0012_downstream_endpoints")]

    operations = [
        TenantForeignKey("tenants_endpointsecret", "endpoint_id", "tenants_downstreamendpoint"),
    ]
