"""`create_tenant --name --slug --owner-email [--plan]`: a tenant and its first owner."""

import secrets

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email, validate_slug
from django.db import IntegrityError, transaction

from kernel.context import tenant_context
from kernel.permissions import OWNER
from kernel.tenancy.models import Plan, Tenant
from kernel.tenancy.selectors import membership_has_role
from kernel.tenants import DEFAULT_PLAN, tenant_create


class Command(BaseCommand):
    help = (
        "Create a tenant with its built-in roles, owned by --owner-email. The owner's account is "
        "created if missing, with a generated password printed once. Running it again for a "
        "tenant that exists with that owner changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="The tenant's display name.")
        parser.add_argument("--slug", required=True, help="Unique, URL-safe identifier.")
        parser.add_argument("--owner-email", required=True, help="Its first owner.")
        parser.add_argument("--plan", default=DEFAULT_PLAN, help="Plan code (default: free).")

    def handle(self, *args, name: str, slug: str, owner_email: str, plan: str, **options):
        User = get_user_model()
        name, slug = name.strip(), slug.strip()
        email = User.objects.normalize_email(owner_email)
        self._validate(name=name, slug=slug, email=email, plan=plan)

        existing = Tenant.objects.filter(slug=slug).first()
        if existing is not None:
            self._check_same_tenant(existing, email=email)
            self.stdout.write(f"Tenant '{slug}' exists with owner {email}: nothing to do.")
            return

        password = None
        try:
            with transaction.atomic():
                owner = User.objects.filter(email=email).first()
                if owner is None:
                    password = secrets.token_urlsafe(16)
                    owner = User.objects.create_user(email, password)
                tenant = tenant_create(name=name, slug=slug, owner=owner, plan_code=plan)
        except IntegrityError as exc:  # the slug or the email was taken meanwhile
            raise CommandError(f"The slug '{slug}' or the email {email} was just taken.") from exc

        self.stdout.write(
            self.style.SUCCESS(f"Created tenant '{tenant.slug}' ({tenant.id}) owned by {email}.")
        )
        if password is not None:
            self.stdout.write(
                f"Created the user {email} with the password {password}\n"
                "It is shown only this once: pass it on safely, and have it changed."
            )

    def _validate(self, *, name: str, slug: str, email: str, plan: str) -> None:
        if not name or len(name) > Tenant._meta.get_field("name").max_length:
            raise CommandError("--name must be 1 to 200 characters.")
        try:
            validate_slug(slug)
        except ValidationError as exc:
            raise CommandError(f"--slug '{slug}': {' '.join(exc.messages)}") from exc
        if len(slug) > Tenant._meta.get_field("slug").max_length:
            raise CommandError("--slug must be at most 63 characters.")
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"--owner-email '{email}' is not a valid email address.") from exc
        if not Plan.objects.filter(code=plan).exists():
            codes = ", ".join(Plan.objects.order_by("code").values_list("code", flat=True))
            raise CommandError(f"No plan '{plan}'. Plans: {codes}.")

    def _check_same_tenant(self, tenant: Tenant, *, email: str) -> None:
        owner = get_user_model().objects.filter(email=email).first()
        with tenant_context(tenant.id):
            same_owner = owner is not None and membership_has_role(
                membership=owner.memberships.filter(tenant=tenant).first(), name=OWNER
            )
        if not same_owner:
            raise CommandError(f"The slug '{tenant.slug}' is taken by another tenant.")
