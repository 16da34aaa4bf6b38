"""Webhooks became an app of their own (webhooks/): their models leave notifications' state.
The tables stay, with their rows; webhooks' 0001 takes them over."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("notifications", "0002_webhooks")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="WebhookDelivery"),
                migrations.DeleteModel(name="WebhookEndpoint"),
            ],
            database_operations=[],
        )
    ]
