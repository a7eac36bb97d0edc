"""A DIP ID is unique in the whole market, not per tenant."""

from django.conf import settings
from django.db import migrations, models

# Lets a service say "this DIP ID belongs to another tenant" instead of a bare IntegrityError,
# without letting the runtime role list other tenants' identities.
LOOKUP = [
    "CREATE POLICY owner_lookup ON tenants_dipidentity FOR SELECT TO CURRENT_USER USING (true)",
    """
    CREATE FUNCTION busbar_dip_id_registered(p_dip_id text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        SELECT EXISTS (SELECT 1 FROM tenants_dipidentity WHERE upper(dip_id) = upper(p_dip_id))
    $$
    """,
    "REVOKE ALL ON FUNCTION busbar_dip_id_registered(text) FROM PUBLIC",
    f'GRANT EXECUTE ON FUNCTION busbar_dip_id_registered(text) TO "{settings.DB_RUNTIME_ROLE}"',
]
LOOKUP_BACKWARD = [
    "DROP FUNCTION IF EXISTS busbar_dip_id_registered(text)",
    "DROP POLICY IF EXISTS owner_lookup ON tenants_dipidentity",
]


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_row_level_security"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="dipidentity",
            name="identity_dip_id",
        ),
        migrations.AddConstraint(
            model_name="dipidentity",
            constraint=models.UniqueConstraint(fields=("dip_id",), name="identity_dip_id_global"),
        ),
        migrations.RunSQL(LOOKUP, LOOKUP_BACKWARD),
    ]
