"""Builders for test data, all going through the services the application itself uses."""

import itertools

from django.contrib.auth import get_user_model

from kernel.context import operator_scope
from kernel.tenancy.models import Membership, MembershipRole, Role
from kernel.tenants import tenant_create

_seq = itertools.count(1)
DEFAULT_PASSWORD = "correct horse battery staple 42"


def make_user(*, email: str | None = None, password: str = DEFAULT_PASSWORD, **extra):
    email = email or f"user{next(_seq)}@example.com"
    return get_user_model().objects.create_user(email, password, **extra)


def make_tenant(*, name: str | None = None, owner=None, plan_code: str = "free"):
    n = next(_seq)
    return tenant_create(
        name=name or f"Tenant {n}",
        slug=f"tenant-{n}",
        owner=owner or make_user(),
        plan_code=plan_code,
    )


def make_role(tenant, *, name: str | None = None, permissions=()):
    """A tenant-defined role, stored as the services store one."""
    # Operator scope with the tenant named, like tenant_create: setup that does not depend on
    # which tenant's setting the test's connection believes it holds (see tests.helpers.outcome).
    with operator_scope("test setup: a role"):
        return Role.objects.create(
            tenant=tenant, name=name or f"role-{next(_seq)}", permissions=sorted(set(permissions))
        )


def make_member(tenant, *, roles=("viewer",), user=None, email: str | None = None):
    """`user` (a new one unless given) joins `tenant` with the roles named."""
    user = user or make_user(email=email)
    with operator_scope("test setup: a member"):
        membership = Membership.objects.create(tenant=tenant, user=user)
        role_objects = list(Role.objects.filter(tenant=tenant, name__in=roles))
        assert len(role_objects) == len(set(roles)), f"unknown role among {roles}"
        MembershipRole.objects.bulk_create(
            MembershipRole(tenant=tenant, membership=membership, role=role) for role in role_objects
        )
    return membership
