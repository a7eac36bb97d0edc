"""The drain's index: a connection's ready outbound backlog, most urgent and oldest first, led by
tenant_id. Without it each drain chunk (``ORDER BY urgent DESC, id LIMIT n``) and each progress
count read and sorted the whole ready backlog, so a 100,000-message drain slowed as it went. The
index is partial: it holds only the messages waiting to be sent, so it stays small."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0019_rollup_hour_indexes"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX message_outbound_ready ON messaging_message"
            " (tenant_id, connection_id, urgent DESC, id)"
            " WHERE direction = 'outbound' AND state = 'ready'",
            "DROP INDEX IF EXISTS message_outbound_ready",
        ),
    ]
