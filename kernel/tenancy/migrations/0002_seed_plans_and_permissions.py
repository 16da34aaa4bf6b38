from django.db import migrations

from kernel.tenancy.reference_data import seed_reference_data


def seed(apps, schema_editor):
    seed_reference_data(apps.get_model("tenants", "Plan"), apps.get_model("tenants", "Permission"))


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
