# Joins the exception queue (after the message store), the validation registry and the normalised
# events, written in parallel after 0001; no schema change.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0003_exception_queue"),
        ("messaging", "0002_validation_registry"),
        ("messaging", "0002_normalised_events_and_delivery"),
    ]

    operations = []
