"""Create (or refresh) the demo tenant, its owner and a demo operator, and print how to sign in
and what to try first. The demo catalog is the catalog's to seed (`catalog_seed`, scripts/run)."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.sessions import issue_tokens
from kernel.context import operator_scope
from kernel.tenancy.models import Tenant
from kernel.tenants import tenant_create

DEMO_EMAIL = "demo@example.com"
DEMO_TENANT_SLUG = "demo"
DEMO_OPERATOR_EMAIL = "operator@example.com"


class Command(BaseCommand):
    help = (
        "Create the demo tenant, its owner and a demo operator for local runs; prints fresh "
        "passwords each time, and what to try first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the server answers."
        )

    def handle(self, *args, **options):
        password, operator_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        with transaction.atomic(), operator_scope("seeding the demo tenant"):
            user = _user_with_password(DEMO_EMAIL, password, name="Demo Owner")
            tenant = Tenant.objects.filter(slug=DEMO_TENANT_SLUG).first()
            if tenant is None:
                tenant = tenant_create(name="Demo", slug=DEMO_TENANT_SLUG, owner=user)
            _user_with_password(
                DEMO_OPERATOR_EMAIL,
                operator_password,
                name="Demo Operator",
                is_staff=True,
                is_superuser=True,
            )
            access = issue_tokens(user=user, tenant=tenant)["access"]
        base = options["base_url"].rstrip("/")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo tenant '{DEMO_TENANT_SLUG}', owner {DEMO_EMAIL} / password {password}"
            )
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo operator {DEMO_OPERATOR_EMAIL} / password {operator_password} "
                f"(the admin: {base}/admin/)"
            )
        )
        self.stdout.write(
            "Try, with the owner's access token (valid for a few minutes):\n"
            f'  curl -H "Authorization: Bearer {access}" {base}/api/v1/products/\n'
            f"The API's documentation: {base}/api/v1/docs/; GraphQL: {base}/graphql/ "
            "(GraphiQL there in a browser, with DEBUG=true)"
        )


def _user_with_password(email: str, password: str, **fields):
    """The user `email`, made if missing, with `password` from now on (and `fields`)."""
    User = get_user_model()
    user = User.objects.filter(email=email).first()
    if user is None:
        return User.objects.create_user(email, password, **fields)
    user.set_password(password)
    for name, value in fields.items():
        setattr(user, name, value)
    user.save(update_fields=["password", *fields])
    return user
