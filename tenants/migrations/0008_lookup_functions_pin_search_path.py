"""Pin every SECURITY DEFINER look-up function's search_path with pg_temp last.

Left out of the path, pg_temp is searched first: a caller's temporary view named like the table a
function reads (calling a pg_temp function) would then run as the function's owner. Listed last,
it can shadow nothing that pg_catalog or public holds.
"""

from __future__ import annotations

from django.db import migrations

FUNCTIONS = [
    "busbar_find_api_credential(text)",
    "busbar_resolve_webhook(text)",
    "busbar_dip_id_registered(text)",
    "busbar_active_tenant_ids()",
]


class Migration(migrations.Migration):
    dependencies = [("tenants", "0007_tenant_require_second_factor")]

    operations = [
        migrations.RunSQL(
            [
                f"ALTER FUNCTION {f} SET search_path = pg_catalog, public, pg_temp"
                for f in FUNCTIONS
            ],
            [f"ALTER FUNCTION {f} SET search_path = pg_catalog, public" for f in FUNCTIONS],
        )
    ]
