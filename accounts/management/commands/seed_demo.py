"""Create (or refresh) the demo tenant and its owner, and print how to sign in."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from kernel.context import operator_scope
from kernel.tenancy.models import Tenant
from kernel.tenants import tenant_create

DEMO_EMAIL = "demo@example.com"
DEMO_TENANT_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the demo tenant and user for local runs; prints a fresh password each time."

    def handle(self, *args, **options):
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        with transaction.atomic(), operator_scope("seeding the demo tenant"):
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                user = User.objects.create_user(DEMO_EMAIL, password, name="Demo Owner")
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            if not Tenant.objects.filter(slug=DEMO_TENANT_SLUG).exists():
                tenant_create(name="Demo", slug=DEMO_TENANT_SLUG, owner=user)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo tenant '{DEMO_TENANT_SLUG}', owner {DEMO_EMAIL} / password {password}"
            )
        )
