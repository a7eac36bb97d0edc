# The overview reads one tenant's rollups of the last hours (24 for flows and codes, 7 days for
# the last traffic). The primary keys are ordered by flow before hour, so those reads walked every
# hour the tables keep for the tenant, a cost that grows with the history retained: these
# indexes make them read only the hours they show. The counters the message statements add to are
# not in them, so those updates can stay heap-only as before; a new row (one per hour, state and
# shard) adds one index entry more.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0018_exception_handling_and_replay"),
        ("tenants", "0015_channel_changes_and_notification_conditions"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="coderollup",
            index=models.Index(fields=["tenant", "hour"], name="code_rollup_hour"),
        ),
        migrations.AddIndex(
            model_name="flowrollup",
            index=models.Index(fields=["tenant", "hour"], name="flow_rollup_hour"),
        ),
    ]
