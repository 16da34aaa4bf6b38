from django.db import migrations, models


def set_the_plans_limits(apps, schema_editor):
    """The seeded plans take their own limit (kernel/tenancy/reference_data.py); a plan an
    operator made keeps the field's default."""
    plan_model = apps.get_model("tenants", "Plan")
    for code, limit in (("free", 10), ("pro", 100), ("enterprise", 1_000)):
        plan_model.objects.filter(code=code).update(max_invitations_per_day=limit)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0006_audit_functions_operator_scope")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="max_invitations_per_day",
            field=models.PositiveIntegerField(default=20),
        ),
        migrations.RunPython(set_the_plans_limits, migrations.RunPython.noop),
    ]
