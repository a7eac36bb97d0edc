import django.db.models.deletion
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0008_exception_queue"),
        ("tenants", "0012_downstream_endpoints"),
    ]

    operations = [
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=255)),
                ("request_hash", models.CharField(max_length=64)),
                ("method", models.CharField(max_length=8)),
                ("path", models.CharField(max_length=300)),
                ("status_code", models.PositiveSmallIntegerField(null=True)),
                ("response", models.JSONField(null=True)),
                ("created_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField()),
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
                    models.Index(fields=["tenant", "expires_at"], name="idempotency_expiry")
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("tenant", "key"), name="idempotency_tenant_key")
                ],
            },
        ),
        EnableTenantRLS(
            "messaging_idempotencykey",
            support_columns=[
                "id",
                "tenant_id",
                "method",
                "path",
                "status_code",
                "created_at",
                "expires_at",
            ],
        ),
    ]
