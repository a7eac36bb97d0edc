"""Break-glass: provider support reads a tenant's message content (MPANs, payloads) only under a
recorded grant that the database itself checks.

The support role's column grants on ``messaging_message`` and ``messaging_raw`` leave out ``mpan``
and ``body_zstd`` (0002), and a row policy cannot tell columns apart, so content gets a path of its
own: the view ``support_message_content``, the only relation giving the support role MPANs or
payloads. A view reads its tables as its owner (the migrating role), so its rows pass the owner's
policies, which are widened for reading by ``support_break_glass``: a row whose tenant holds an
active grant (not ended, not expired) naming the session's ``app.user_id``. The view repeats that
condition in its own WHERE (as a security barrier), so a support session that sets
``app.tenant_id`` to pass the tenant policy still sees no content without a grant. The runtime role
loses the view; it may record and end grants, never rewrite or delete one.
"""

from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.tenancy
from core.db import CURRENT_USER_SQL, EnableTenantRLS

SUPPORT_GRANT_COLUMNS = [
    "id", "tenant_id", "staff_user_id", "staff_username", "reason", "granted_at", "expires_at",
    "ended_at", "ended_by",
]  # fmt: skip

ACTIVE_GRANT_SQL = f"""
    EXISTS (SELECT 1 FROM messaging_breakglassgrant g
            WHERE g.tenant_id = {{table}}.tenant_id
              AND g.staff_user_id = {CURRENT_USER_SQL}
              AND g.ended_at IS NULL AND g.granted_at <= now() AND g.expires_at > now())
"""
CONTENT_TABLES = ("messaging_message", "messaging_raw")


def forward_sql() -> list[str]:
    runtime, support = settings.DB_RUNTIME_ROLE, settings.DB_SUPPORT_ROLE
    return [
        f'REVOKE DELETE, TRUNCATE ON messaging_breakglassgrant FROM "{runtime}"',
        f'REVOKE UPDATE ON messaging_breakglassgrant FROM "{runtime}"',
        f'GRANT UPDATE (ended_at, ended_by) ON messaging_breakglassgrant TO "{runtime}"',
        # The view's own reads of the grants (as its owner): only the session user's.
        "CREATE POLICY support_break_glass ON messaging_breakglassgrant FOR SELECT TO CURRENT_USER"
        f" USING (staff_user_id = {CURRENT_USER_SQL})",
        *(
            f"CREATE POLICY support_break_glass ON {table} FOR SELECT TO CURRENT_USER"
            f" USING ({ACTIVE_GRANT_SQL.format(table=table)})"
            for table in CONTENT_TABLES
        ),
        f"""
        CREATE VIEW support_message_content WITH (security_barrier) AS
        SELECT m.tenant_id, m.id, m.mpan, m.raw_id, m.raw_offset, m.raw_length, r.body_zstd
        FROM messaging_message m
        LEFT JOIN messaging_raw r ON r.tenant_id = m.tenant_id AND r.id = m.raw_id
        WHERE {ACTIVE_GRANT_SQL.format(table="m")}
        """,
        f'REVOKE ALL ON support_message_content FROM PUBLIC, "{runtime}"',
        f'GRANT SELECT ON support_message_content TO "{support}"',
    ]


BACKWARD_SQL = [
    "DROP VIEW IF EXISTS support_message_content",
    *(f"DROP POLICY IF EXISTS support_break_glass ON {t}" for t in CONTENT_TABLES),
    "DROP POLICY IF EXISTS support_break_glass ON messaging_breakglassgrant",
]


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0014_console_rollups_and_search_indexes"),
        ("tenants", "0013_downstream_same_tenant_keys"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BreakGlassGrant",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("staff_username", models.CharField(max_length=150)),
                ("reason", models.TextField()),
                ("granted_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField()),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("ended_by", models.CharField(blank=True, max_length=200)),
                (
                    "staff_user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        default=core.tenancy.current_tenant_id,
                        editable=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["tenant", "staff_user", "expires_at"], name="break_glass_staff"
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("expires_at__gt", models.F("granted_at"))),
                        name="break_glass_expires_after_granted",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("reason", ""), _negated=True),
                        name="break_glass_has_reason",
                    ),
                ],
            },
        ),
        EnableTenantRLS("messaging_breakglassgrant", support_columns=SUPPORT_GRANT_COLUMNS),
        migrations.RunSQL(forward_sql(), BACKWARD_SQL),
    ]
