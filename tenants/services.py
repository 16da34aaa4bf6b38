"""Writes on tenants. Each service takes keyword-only arguments and runs in one transaction."""

from django.db import transaction
from django.utils.text import slugify

from tenants.context import operator_scope
from tenants.models import Membership, MembershipRole, Plan, Role, Tenant
from tenants.permissions import BUILTIN_ROLES, OWNER

DEFAULT_PLAN = "free"


def tenant_slug_from_name(name: str) -> str:
    return slugify(name)[:63].strip("-") or "tenant"


@transaction.atomic
def tenant_create(*, name: str, slug: str | None = None, owner, plan_code: str = DEFAULT_PLAN):
    """A new tenant with its built-in roles and `owner` as its first owner."""
    with operator_scope("creating a tenant and its first rows"):
        tenant = Tenant.objects.create(
            name=name,
            slug=slug or tenant_slug_from_name(name),
            plan=Plan.objects.get(code=plan_code),
        )
        roles = Role.objects.bulk_create(
            Role(
                tenant=tenant,
                name=role_name,
                description=description,
                permissions=sorted(perms),
                is_builtin=True,
            )
            for role_name, (description, perms) in BUILTIN_ROLES.items()
        )
        membership = Membership.objects.create(tenant=tenant, user=owner)
        owner_role = next(role for role in roles if role.name == OWNER)
        MembershipRole.objects.create(tenant=tenant, membership=membership, role=owner_role)
    return tenant
