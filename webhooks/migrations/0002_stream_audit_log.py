"""Stream the audit log of the tenants whose endpoints already take `audit.event` (a pattern such
as `*`), as an endpoint created from now on does (webhooks/services.py): without this, an
existing `*` endpoint would start receiving the audit log only once some endpoint of its tenant
changed. The head row of a tenant with no event yet is made here, as the first event would.

Endpoints and heads are under forced row-level security: the migration reads and writes them in
the operator scope, for its own transaction only.
"""

import fnmatch
import uuid

from django.db import migrations

TOPIC = "audit.event"
GENESIS = "0" * 64


def stream_audit_logs(apps, schema_editor):
    WebhookEndpoint = apps.get_model("webhooks", "WebhookEndpoint")
    AuditChainHead = apps.get_model("tenants", "AuditChainHead")
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('app.operator_scope', 'on', true)")
    tenant_ids = {
        tenant_id
        for tenant_id, topics in WebhookEndpoint.objects.filter(is_active=True).values_list(
            "tenant_id", "topics"
        )
        if any(fnmatch.fnmatchcase(TOPIC, pattern) for pattern in topics)
    }
    if tenant_ids:
        AuditChainHead.objects.bulk_create(
            [
                AuditChainHead(
                    id=uuid.uuid4(), tenant_id=tenant_id, hash=GENESIS, anchor_hash=GENESIS
                )
                for tenant_id in tenant_ids
            ],
            ignore_conflicts=True,
        )
        AuditChainHead.objects.filter(tenant_id__in=tenant_ids).update(streamed=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('app.operator_scope', '', true)")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("tenants", "0012_auditchainhead_streamed"),
    ]

    operations = [
        migrations.RunPython(stream_audit_logs, migrations.RunPython.noop, elidable=True),
    ]
