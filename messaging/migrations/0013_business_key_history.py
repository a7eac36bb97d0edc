"""The business-key history the contextual stage reads (late or out-of-order by key and version):
one row per key and connection, under row-level security, pointing only at its own tenant's
connection."""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS, TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0012_outbound_urgency_and_rate_limit"),
        ("tenants", "0013_downstream_same_tenant_keys"),
    ]

    operations = [
        migrations.CreateModel(
            name="KeyVersion",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=120)),
                ("version", models.CharField(max_length=20)),
                ("sender_reference", models.CharField(default="", max_length=200)),
                ("message_id", models.BigIntegerField()),
                (
                    "updated_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
                ),
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
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "connection", "key"), name="key_version_connection_key"
                    )
                ],
            },
        ),
        EnableTenantRLS(
            "messaging_keyversion",
            # Not the key: it names the MPAN, which support sees only under break-glass.
            support_columns=[
                "id",
                "tenant_id",
                "connection_id",
                "version",
                "sender_reference",
                "message_id",
                "updated_at",
            ],
        ),
        TenantForeignKey("messaging_keyversion", "connection_id", "tenants_connection"),
    ]
