# Exception handling (SLA, assignment, resolution codes, the handling history) and replay requests,
# both tenant tables under RLS whose references stay inside the tenant; and the message's
# "replayed" mark, a work column the runtime role may set.

import django.contrib.postgres.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.tenancy
from core.db import EnableTenantRLS, TenantForeignKey

RUNTIME = settings.DB_RUNTIME_ROLE
SUPPORT = settings.DB_SUPPORT_ROLE


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0017_reconciliation_results"),
        ("tenants", "0013_downstream_same_tenant_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="replayed_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="messageexception",
            name="assigned_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="messageexception",
            name="assignee",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="tenants.membership",
            ),
        ),
        migrations.AddField(
            model_name="messageexception",
            name="resolution_code",
            field=models.CharField(
                blank=True,
                choices=[
                    ("corrected_reprocessed", "Corrected and reprocessed"),
                    ("resent_by_sender", "Sender sent a corrected message"),
                    ("replayed", "Replayed"),
                    ("raised_with_party", "Raised with the DIP or market party"),
                    ("accepted_as_is", "Accepted as is (no action needed)"),
                    ("duplicate", "Duplicate of another exception"),
                    ("withdrawn", "Message withdrawn or superseded"),
                    ("automatic", "Resolved automatically (the message later succeeded)"),
                ],
                max_length=24,
            ),
        ),
        migrations.AddField(
            model_name="messageexception",
            name="sla_due_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="ExceptionHandling",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("assigned", "Assigned"),
                            ("commented", "Commented"),
                            ("resolved", "Resolved"),
                            ("reprocessed", "Reprocessed"),
                        ],
                        max_length=12,
                    ),
                ),
                ("actor", models.CharField(max_length=150)),
                ("actor_user_id", models.BigIntegerField(blank=True, null=True)),
                ("text", models.TextField(blank=True)),
                ("detail", models.JSONField(blank=True, default=dict)),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "exception",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="messaging.messageexception",
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
                "db_table": "messaging_exception_handling",
                "indexes": [
                    models.Index(fields=["tenant", "exception", "at"], name="exception_handling")
                ],
            },
        ),
        migrations.CreateModel(
            name="Replay",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("inbound", "Inbound: redeliver the events downstream"),
                            ("outbound", "Outbound: resend to the DIP"),
                            ("dip_replay", "Ask the DIP to replay a window (pull)"),
                            ("dip_requeue", "Ask the DIP to requeue a window (push again)"),
                        ],
                        max_length=12,
                    ),
                ),
                ("production", models.BooleanField()),
                (
                    "reason_code",
                    models.CharField(
                        choices=[
                            ("downstream_outage", "The client's system missed it (outage)"),
                            ("downstream_data_loss", "The client's system lost data"),
                            ("dip_outage", "The DIP or the connection was down"),
                            ("reconciliation_gap", "Reconciliation found a gap"),
                            ("corrected_configuration", "Configuration corrected"),
                            ("market_party_request", "A market party asked for it"),
                            ("other", "Other (say why)"),
                        ],
                        max_length=30,
                    ),
                ),
                ("reason_text", models.TextField()),
                (
                    "selection",
                    models.JSONField(blank=True, default=dict, help_text="ids or filter as asked"),
                ),
                (
                    "message_ids",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), blank=True, default=list
                    ),
                ),
                ("interface_id", models.CharField(blank=True, max_length=8)),
                ("window_from", models.DateTimeField(blank=True, null=True)),
                ("window_to", models.DateTimeField(blank=True, null=True)),
                ("checks", models.JSONField(blank=True, default=list)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Waiting for approval"),
                            ("approved", "Approved, running"),
                            ("refused", "Refused"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("requested_by", models.CharField(max_length=150)),
                ("requested_by_user_id", models.BigIntegerField(blank=True, null=True)),
                ("requested_at", models.DateTimeField(auto_now_add=True)),
                ("decided_by", models.CharField(blank=True, max_length=150)),
                ("decided_by_user_id", models.BigIntegerField(blank=True, null=True)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                ("decision_note", models.TextField(blank=True)),
                ("outcome", models.JSONField(blank=True, default=dict)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
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
                "db_table": "messaging_replay",
                "indexes": [
                    models.Index(fields=["tenant", "state", "requested_at"], name="replay_state")
                ],
            },
        ),
        migrations.RunSQL(
            [
                f'GRANT UPDATE (replayed_at) ON messaging_message TO "{RUNTIME}"',
                f'GRANT SELECT (replayed_at) ON messaging_message TO "{SUPPORT}"',
            ],
            [
                f'REVOKE UPDATE (replayed_at) ON messaging_message FROM "{RUNTIME}"',
                f'REVOKE SELECT (replayed_at) ON messaging_message FROM "{SUPPORT}"',
            ],
        ),
        # Support triages by metadata; comments and reasons may quote payloads, so they stay out.
        EnableTenantRLS(
            "messaging_exception_handling",
            support_columns=["id", "tenant_id", "exception_id", "action", "actor", "at"],
        ),
        EnableTenantRLS(
            "messaging_replay",
            support_columns=[
                "id",
                "tenant_id",
                "kind",
                "connection_id",
                "production",
                "reason_code",
                "message_ids",
                "interface_id",
                "window_from",
                "window_to",
                "state",
                "requested_by",
                "requested_at",
                "decided_by",
                "decided_at",
                "completed_at",
            ],
        ),
        TenantForeignKey("messaging_exception", "assignee_id", "tenants_membership"),
        TenantForeignKey("messaging_exception_handling", "exception_id", "messaging_exception"),
        TenantForeignKey("messaging_replay", "connection_id", "tenants_connection"),
    ]
