"""The `tenant.export` permission (kernel/exports/): owners and admins hold every code, so their
roles in each tenant gain it, as new tenants' do. The code's row in the Permission table comes
from the reference data, seeded after every migrate (kernel/tenancy/reference_data.py)."""

from django.db import migrations

TENANT_EXPORT = "tenant.export"


def give_owners_and_admins_the_new_code(apps, schema_editor):
    role_model = apps.get_model("tenants", "Role")
    for role in role_model.objects.filter(is_builtin=True, name__in=["owner", "admin"]):
        if TENANT_EXPORT not in role.permissions:
            role.permissions = sorted([*role.permissions, TENANT_EXPORT])
            role.save(update_fields=["permissions"])


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0012_auditchainhead_streamed'),
    ]

    operations = [
        migrations.RunPython(give_owners_and_admins_the_new_code, migrations.RunPython.noop),
    ]
