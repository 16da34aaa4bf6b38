"""The audit log's stream (docs/audit.md, "Streaming to a SIEM"): whether a tenant's events are
published as `audit.event` as they are appended. Off for everyone here; the webhooks app's
migration that follows turns it on for the tenants whose endpoints already take the topic."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0011_retention_per_tenant"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditchainhead",
            name="streamed",
            field=models.BooleanField(default=False),
        ),
    ]
