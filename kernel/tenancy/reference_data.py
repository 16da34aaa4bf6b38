"""Plans and permission codes every database must hold.

Seeded by migration 0002 and again after every `migrate` and `flush` (post_migrate), so a test
database flushed between tests, or a new permission code, never leaves them missing. Existing plans
are left as operators edited them; permission descriptions follow the code.
"""

from kernel.permissions import PERMISSION_DESCRIPTIONS

PLANS = [
    # code, name, requests/minute, burst, members, api keys, products, invitations a day,
    # OAuth apps, days of audit events kept, days of notifications kept
    ("free", "Free", 120, 30, 5, 2, 1_000, 10, 2, 365, 30),
    ("pro", "Pro", 1_200, 200, 50, 20, 100_000, 100, 20, 730, 90),
    ("enterprise", "Enterprise", 12_000, 2_000, 1_000, 200, 10_000_000, 1_000, 100, 2555, 365),
]


def seed_reference_data(plan_model, permission_model) -> None:
    # A migration passes the model as it was then: only the fields it had are set.
    fields = {field.name for field in plan_model._meta.get_fields()}
    for (
        code,
        name,
        rpm,
        burst,
        members,
        keys,
        products,
        invitations,
        oauth_apps,
        audit_days,
        notification_days,
    ) in PLANS:
        defaults = {
            "name": name,
            "requests_per_minute": rpm,
            "burst": burst,
            "max_members": members,
            "max_api_keys": keys,
            "max_products": products,
            "max_invitations_per_day": invitations,
            "max_oauth_apps": oauth_apps,
            "audit_retention_days": audit_days,
            "notification_retention_days": notification_days,
        }
        plan_model.objects.get_or_create(
            code=code, defaults={key: value for key, value in defaults.items() if key in fields}
        )
    for code, description in PERMISSION_DESCRIPTIONS.items():
        permission_model.objects.update_or_create(
            code=code.value, defaults={"description": description}
        )
