"""Outbound urgency (a write-once column of the partitioned message table, added in SQL like the
table itself); on the breaker row, the per-connection send rate limit's token bucket and the
drain's progress after an outage."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0011_same_tenant_keys_for_later_tables"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE messaging_message ADD COLUMN urgent boolean NOT NULL DEFAULT false",
                    "ALTER TABLE messaging_message DROP COLUMN urgent",
                )
            ],
            state_operations=[
                migrations.AddField(
                    model_name="message",
                    name="urgent",
                    field=models.BooleanField(db_default=False),
                )
            ],
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="rate_tokens",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="rate_refilled_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="drain_started_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="drain_finished_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="drain_backlog",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="connectionbreaker",
            name="drain_done",
            field=models.IntegerField(default=0),
        ),
        # Metadata: the metrics (read as the support role) report every tenant's drain.
        migrations.RunSQL(
            [
                "GRANT SELECT (drain_started_at, drain_finished_at, drain_backlog, drain_done)"
                f' ON messaging_connectionbreaker TO "{settings.DB_SUPPORT_ROLE}"'
            ],
            migrations.RunSQL.noop,
        ),
    ]
