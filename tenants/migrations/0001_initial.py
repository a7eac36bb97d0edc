# Tenant first, so that every tenant column is created with its table: an AddField would make
# Django evaluate the column's default (current_tenant_id), which raises outside a tenant context.

import uuid

import django.contrib.postgres.fields
import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.tenancy
import tenants.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Tenant",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("slug", models.SlugField(unique=True)),
                ("name", models.CharField(max_length=200)),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name="DipIdentity",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "mpid",
                    models.CharField(
                        max_length=4,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[A-Z]{4}$", "An MPID is four capital letters (DT-027)."
                            )
                        ],
                        verbose_name="MPID",
                    ),
                ),
                (
                    "role_code",
                    models.CharField(
                        max_length=5,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[A-Z]{3,5}$", "A DIP role code is 3 to 5 capitals (DT-009)."
                            )
                        ],
                    ),
                ),
                (
                    "dip_id",
                    models.CharField(
                        max_length=10,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[0-9A-Fa-f]{10}$",
                                "A DIP ID is 10 hexadecimal characters (DT-006), e.g. 1009012345.",
                            )
                        ],
                        verbose_name="DIP ID",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
                "verbose_name": "DIP identity",
                "verbose_name_plural": "DIP identities",
            },
        ),
        migrations.CreateModel(
            name="Connection",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "environment",
                    models.CharField(
                        choices=[
                            ("DEV", "Development"),
                            ("UIT", "User integration testing"),
                            ("SIT", "System integration testing"),
                            ("SITB", "System integration testing B"),
                            ("PRD", "Production"),
                        ],
                        max_length=4,
                    ),
                ),
                ("dip_base_url", models.URLField(max_length=300, verbose_name="DIP base URL")),
                (
                    "dcp_id",
                    models.CharField(
                        blank=True,
                        help_text="Busbar's DIP Connection Provider id for this role (S1.DIPConnectionProviderID).",
                        max_length=10,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[0-9A-Fa-f]{10}$",
                                "A DIP ID is 10 hexadecimal characters (DT-006), e.g. 1009012345.",
                            )
                        ],
                        verbose_name="DCP ID",
                    ),
                ),
                ("api_key_encrypted", models.TextField(blank=True, editable=False)),
                ("api_key_hint", models.CharField(blank=True, editable=False, max_length=8)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "identity",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="connections",
                        to="tenants.dipidentity",
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
        ),
        migrations.CreateModel(
            name="Channel",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "interface_id",
                    models.CharField(
                        max_length=8,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^(IF-\\d{3}|REP-\\d{3}[A-Z]?)$",
                                "An interface id looks like IF-021 or REP-002A.",
                            )
                        ],
                    ),
                ),
                (
                    "direction",
                    models.CharField(
                        choices=[
                            ("inbound", "Inbound (DIP to tenant)"),
                            ("outbound", "Outbound (tenant to DIP)"),
                        ],
                        max_length=8,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("test", "Test"),
                            ("live", "Live"),
                            ("deprecated", "Deprecated"),
                            ("disabled", "Disabled"),
                        ],
                        default="test",
                        max_length=10,
                    ),
                ),
                (
                    "webhook_token",
                    models.CharField(
                        default=tenants.models.new_webhook_token, editable=False, max_length=64
                    ),
                ),
                (
                    "expected_cadence",
                    models.DurationField(
                        blank=True,
                        help_text="Alert when nothing has arrived for this long.",
                        null=True,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "connection",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="channels",
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
        ),
        migrations.CreateModel(
            name="ConnectionUserObjectPermission",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "content_object",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="tenants.connection"
                    ),
                ),
                (
                    "permission",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="auth.permission"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        default=core.tenancy.current_tenant_id,
                        editable=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="ConnectionGroupObjectPermission",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "content_object",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="tenants.connection"
                    ),
                ),
                (
                    "group",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.group"),
                ),
                (
                    "permission",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="auth.permission"
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        default=core.tenancy.current_tenant_id,
                        editable=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="ChannelUserObjectPermission",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "content_object",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="tenants.channel"
                    ),
                ),
                (
                    "permission",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="auth.permission"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        default=core.tenancy.current_tenant_id,
                        editable=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="ChannelGroupObjectPermission",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "content_object",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="tenants.channel"
                    ),
                ),
                (
                    "group",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.group"),
                ),
                (
                    "permission",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="auth.permission"
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        default=core.tenancy.current_tenant_id,
                        editable=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="ApiCredential",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("prefix", models.CharField(editable=False, max_length=16)),
                ("secret_hash", models.CharField(editable=False, max_length=64)),
                (
                    "scopes",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(
                            choices=[
                                ("read", "Read identities, channels and events"),
                                ("submit", "Submit outbound messages"),
                            ],
                            max_length=20,
                        ),
                        default=list,
                    ),
                ),
                (
                    "environment",
                    models.CharField(
                        choices=[
                            ("DEV", "Development"),
                            ("UIT", "User integration testing"),
                            ("SIT", "System integration testing"),
                            ("SITB", "System integration testing B"),
                            ("PRD", "Production"),
                        ],
                        max_length=4,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
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
        ),
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "roles",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(
                            choices=[
                                ("tenant_admin", "Tenant admin"),
                                ("certificate_admin", "Certificate admin"),
                                ("message_operator", "Message operator"),
                                ("approver", "Approver"),
                                ("viewer", "Viewer"),
                                ("auditor", "Auditor"),
                            ],
                            max_length=30,
                        ),
                        default=list,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
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
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "user"), name="membership_tenant_user"
                    )
                ],
            },
        ),
        migrations.AddConstraint(
            model_name="dipidentity",
            constraint=models.UniqueConstraint(
                fields=("tenant", "mpid", "role_code"), name="identity_mpid_role"
            ),
        ),
        migrations.AddConstraint(
            model_name="dipidentity",
            constraint=models.UniqueConstraint(fields=("tenant", "dip_id"), name="identity_dip_id"),
        ),
        migrations.AlterUniqueTogether(
            name="connectionuserobjectpermission",
            unique_together={("user", "permission", "content_object")},
        ),
        migrations.AlterUniqueTogether(
            name="connectiongroupobjectpermission",
            unique_together={("group", "permission", "content_object")},
        ),
        migrations.AddConstraint(
            model_name="connection",
            constraint=models.UniqueConstraint(
                fields=("tenant", "identity", "environment"), name="connection_identity_env"
            ),
        ),
        migrations.AlterUniqueTogether(
            name="channeluserobjectpermission",
            unique_together={("user", "permission", "content_object")},
        ),
        migrations.AlterUniqueTogether(
            name="channelgroupobjectpermission",
            unique_together={("group", "permission", "content_object")},
        ),
        migrations.AddConstraint(
            model_name="channel",
            constraint=models.UniqueConstraint(
                fields=("tenant", "connection", "interface_id", "direction"),
                name="channel_connection_interface",
            ),
        ),
        migrations.AddConstraint(
            model_name="channel",
            constraint=models.UniqueConstraint(
                fields=("webhook_token",), name="channel_webhook_token"
            ),
        ),
        migrations.AddConstraint(
            model_name="apicredential",
            constraint=models.UniqueConstraint(fields=("prefix",), name="api_credential_prefix"),
        ),
    ]
