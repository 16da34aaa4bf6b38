"""A notification's id is unique per tenant, not globally: UNIQUE (tenant_id, id) replaces
UNIQUE (id).

Every look-up by id is made in the tenant's scope, which the new index serves as the old one did;
and a uniqueness that leaves out tenant_id could not be enforced on a table distributed by tenant
(docs/scale-out.md, "Citus: the distribution plan"; tests/scale/test_citus_readiness.py). The new
constraint is created before the old one goes, in the migration's one transaction.
"""

import uuid

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0004_notification_tenant_created"),
        ("tenants", "0014_audit_erasure"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="notification",
            constraint=models.UniqueConstraint(
                fields=("tenant", "id"), name="notification_id_unique_per_tenant"
            ),
        ),
        migrations.AlterField(
            model_name="notification",
            name="id",
            field=models.UUIDField(default=uuid.uuid4, editable=False),
        ),
    ]
