"""The index the retention job (notifications.services.notifications_prune) deletes by: each
tenant's notifications older than its cut-off."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_webhooks_move_to_their_app"),
        ("tenants", "0011_retention_per_tenant"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(fields=["tenant", "created_at"], name="notification_tenant_created"),
        ),
    ]
