"""What the console's overview and search read: rollups kept in the statements that move messages
(latency and retries per hour, validation failures and rejection codes per hour), and indexes for
the searches by interface, event code and the rarer end states, each led by tenant_id.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS, TenantForeignKey

SEARCH_INDEXES = [
    (
        "message_interface",
        "CREATE INDEX message_interface ON messaging_message (tenant_id, interface_id, id)",
    ),
    (
        "message_event",
        "CREATE INDEX message_event ON messaging_message (tenant_id, event_code, id)"
        " WHERE event_code <> ''",
    ),
    # The work index covers the states that still move; these end states are rare enough to find
    # by themselves (delivered and acknowledged are most of the table: the key order finds them).
    (
        "message_rare_end",
        "CREATE INDEX message_rare_end ON messaging_message (tenant_id, state, id)"
        " WHERE state IN ('rejected', 'superseded')",
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0013_business_key_history"),
        ("tenants", "0013_downstream_same_tenant_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="flowrollup",
            name="age_ms_sum",
            field=models.BigIntegerField(db_default=0),
        ),
        migrations.AddField(
            model_name="flowrollup",
            name="retried",
            field=models.BigIntegerField(db_default=0),
        ),
        migrations.CreateModel(
            name="CodeRollup",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "connection_id",
                        "interface_id",
                        "direction",
                        "hour",
                        "kind",
                        "stage",
                        "code",
                        "shard",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("interface_id", models.CharField(max_length=8)),
                ("direction", models.CharField(max_length=8)),
                ("hour", models.DateTimeField()),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("finding", "A validation finding (error or fatal)"),
                            ("rejection", "A rejection by the DIP or a market party"),
                        ],
                        max_length=10,
                    ),
                ),
                ("stage", models.CharField(max_length=12)),
                ("code", models.CharField(max_length=40)),
                ("shard", models.SmallIntegerField()),
                ("count", models.BigIntegerField(db_default=0)),
                (
                    "connection",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenants.connection",
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
                "db_table": "messaging_code_rollup",
            },
        ),
        EnableTenantRLS(
            "messaging_code_rollup",
            support_columns=[
                "tenant_id",
                "connection_id",
                "interface_id",
                "direction",
                "hour",
                "kind",
                "stage",
                "code",
                "shard",
                "count",
            ],
        ),
        TenantForeignKey("messaging_code_rollup", "connection_id", "tenants_connection"),
        migrations.RunSQL(
            f'GRANT SELECT (age_ms_sum, retried) ON messaging_flow_rollup TO "{settings.DB_SUPPORT_ROLE}"',
            f'REVOKE SELECT (age_ms_sum, retried) ON messaging_flow_rollup FROM "{settings.DB_SUPPORT_ROLE}"',
        ),
        *(
            migrations.RunSQL(create, f"DROP INDEX IF EXISTS {name}")
            for name, create in SEARCH_INDEXES
        ),
    ]
