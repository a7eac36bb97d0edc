"""Put every tenant table under RLS, and add the two lookups that run before a tenant is known."""

from __future__ import annotations

from django.conf import settings
from django.db import migrations

from core.db import CURRENT_USER_SQL, EnableTenantRLS

GUARDIAN_PERMISSION_TABLES = [
    "tenants_channeluserobjectpermission",
    "tenants_channelgroupobjectpermission",
    "tenants_connectionuserobjectpermission",
    "tenants_connectiongroupobjectpermission",
]


def lookup_sql() -> list[str]:
    """SECURITY DEFINER functions owned by the migrating role, which may read these two tables
    through an owner-only policy; each returns one row for one exact key and nothing to list."""
    runtime = settings.DB_RUNTIME_ROLE
    return [
        "CREATE POLICY owner_lookup ON tenants_apicredential FOR SELECT TO CURRENT_USER USING (true)",
        "CREATE POLICY owner_lookup ON tenants_channel FOR SELECT TO CURRENT_USER USING (true)",
        """
        CREATE FUNCTION busbar_find_api_credential(p_prefix text)
        RETURNS TABLE (tenant_id uuid, id bigint, secret_hash varchar, scopes varchar[], revoked boolean)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            SELECT c.tenant_id, c.id, c.secret_hash, c.scopes, c.revoked_at IS NOT NULL
            FROM tenants_apicredential c WHERE c.prefix = p_prefix
        $$
        """,
        """
        CREATE FUNCTION busbar_resolve_webhook(p_token text)
        RETURNS TABLE (tenant_id uuid, channel_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            SELECT c.tenant_id, c.id FROM tenants_channel c
            WHERE c.webhook_token = p_token AND c.status <> 'disabled'
        $$
        """,
        "REVOKE ALL ON FUNCTION busbar_find_api_credential(text) FROM PUBLIC",
        "REVOKE ALL ON FUNCTION busbar_resolve_webhook(text) FROM PUBLIC",
        f'GRANT EXECUTE ON FUNCTION busbar_find_api_credential(text) TO "{runtime}"',
        f'GRANT EXECUTE ON FUNCTION busbar_resolve_webhook(text) TO "{runtime}"',
    ]


LOOKUP_BACKWARD = [
    "DROP FUNCTION IF EXISTS busbar_resolve_webhook(text)",
    "DROP FUNCTION IF EXISTS busbar_find_api_credential(text)",
    "DROP POLICY IF EXISTS owner_lookup ON tenants_channel",
    "DROP POLICY IF EXISTS owner_lookup ON tenants_apicredential",
]

# guardian's generic permission tables would hold rows for every tenant side by side: they are
# closed (RLS forced, a policy that matches nothing) so that every grant lands in a tenant table.
GUARDIAN_GENERIC_CLOSED = [
    sql
    for table in ("guardian_userobjectpermission", "guardian_groupobjectpermission")
    for sql in (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY closed ON {table} USING (false) WITH CHECK (false)",
    )
]


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0001_initial"),
        ("guardian", "0002_generic_permissions_index"),
    ]

    operations = [
        EnableTenantRLS(
            "tenants_tenant",
            column="id",
            support_columns=["id", "slug", "name", "is_active", "created_at"],
            extra_using=(
                "id IN (SELECT m.tenant_id FROM tenants_membership m"
                f" WHERE m.user_id = {CURRENT_USER_SQL})"
            ),
        ),
        EnableTenantRLS(
            "tenants_membership",
            support_columns=["id", "tenant_id", "user_id", "roles", "created_at"],
            extra_using=f"user_id = {CURRENT_USER_SQL}",
        ),
        EnableTenantRLS(
            "tenants_dipidentity",
            support_columns=["id", "tenant_id", "mpid", "role_code", "dip_id", "created_at"],
        ),
        EnableTenantRLS(
            "tenants_connection",
            # Not api_key_encrypted: support never receives even the ciphertext of a key.
            support_columns=[
                "id",
                "tenant_id",
                "identity_id",
                "environment",
                "dip_base_url",
                "dcp_id",
                "api_key_hint",
                "created_at",
            ],
        ),
        EnableTenantRLS(
            "tenants_channel",
            # Not webhook_token: knowing it lets a caller post to the tenant's webhook.
            support_columns=[
                "id",
                "tenant_id",
                "connection_id",
                "interface_id",
                "direction",
                "status",
                "expected_cadence",
                "created_at",
            ],
        ),
        EnableTenantRLS(
            "tenants_apicredential",
            support_columns=[
                "id",
                "tenant_id",
                "name",
                "prefix",
                "scopes",
                "environment",
                "created_at",
                "last_used_at",
                "revoked_at",
            ],
        ),
        *[EnableTenantRLS(table) for table in GUARDIAN_PERMISSION_TABLES],
        migrations.RunSQL(lookup_sql(), LOOKUP_BACKWARD),
        migrations.RunSQL(GUARDIAN_GENERIC_CLOSED, migrations.RunSQL.noop),
    ]
