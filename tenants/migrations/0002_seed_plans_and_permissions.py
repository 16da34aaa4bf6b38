from django.db import migrations

PLANS = [
    # code, name, requests/minute, burst, members, api keys, products
    ("free", "Free", 120, 30, 5, 2, 1_000),
    ("pro", "Pro", 1_200, 200, 50, 20, 100_000),
    ("enterprise", "Enterprise", 12_000, 2_000, 1_000, 200, 10_000_000),
]

PERMISSIONS = [
    ("tenant.manage", "Change the tenant's settings."),
    ("members.read", "See the tenant's members and invitations."),
    ("members.manage", "Invite, change and remove members."),
    ("roles.manage", "Define the tenant's own roles."),
    ("apikeys.manage", "Create, list and revoke API keys."),
    ("audit.read", "Read the audit log."),
    ("catalog.read", "Read products and categories."),
    ("catalog.write", "Create, change and delete products and categories."),
    ("catalog.import", "Import products in bulk."),
    ("notifications.read", "Receive and read notifications."),
    ("webhooks.manage", "Manage webhook endpoints."),
]


def seed(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    Permission = apps.get_model("tenants", "Permission")
    for code, name, rpm, burst, members, keys, products in PLANS:
        Plan.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "requests_per_minute": rpm,
                "burst": burst,
                "max_members": members,
                "max_api_keys": keys,
                "max_products": products,
            },
        )
    for code, description in PERMISSIONS:
        Permission.objects.update_or_create(code=code, defaults={"description": description})


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
