import django.db.models.deletion
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_outbound_idempotency_keys"),
        ("tenants", "0007_tenant_require_second_factor"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConnectionBreaker",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("closed", "Closed: sending"),
                            ("open", "Open: the DIP is failing, nothing is sent until the probe"),
                            ("half_open", "Half-open: one probe request decides"),
                        ],
                        default="closed",
                        max_length=10,
                    ),
                ),
                ("consecutive_failures", models.IntegerField(default=0)),
                ("opened_at", models.DateTimeField(null=True)),
                ("probe_at", models.DateTimeField(null=True)),
                ("last_error", models.CharField(blank=True, max_length=500)),
                ("updated_at", models.DateTimeField()),
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
                        fields=("tenant", "connection"), name="breaker_connection"
                    )
                ],
            },
        ),
        EnableTenantRLS(
            "messaging_connectionbreaker",
            support_columns=[
                "id",
                "tenant_id",
                "connection_id",
                "state",
                "consecutive_failures",
                "opened_at",
                "probe_at",
                "last_error",
                "updated_at",
            ],
        ),
    ]
