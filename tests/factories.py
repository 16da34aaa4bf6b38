"""Builders for test data, all going through the services the application itself uses."""

import itertools

from django.contrib.auth import get_user_model

from tenants.services import tenant_create

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
