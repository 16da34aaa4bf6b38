"""System checks: a tenant-owned model whose manager does not scope by tenant stops start-up.

Replacing `objects` with a plain manager (`MyQuerySet.as_manager()`) is one easily forgotten line
that would switch the first isolation layer off for that model; this makes it a start-up error
(and a test failure) instead.
"""

from django.apps import apps
from django.core import checks


@checks.register()
def tenant_owned_models_are_scoped(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager, TenantScopedQuerySet

    errors = []
    for model in apps.get_models():
        if not issubclass(model, TenantOwnedModel):
            continue
        for role, manager in (("default", model._default_manager), ("base", model._base_manager)):
            if not isinstance(manager, TenantScopedManager) or not issubclass(
                manager._queryset_class, TenantScopedQuerySet
            ):
                errors.append(
                    checks.Error(
                        f"{model._meta.label}'s {role} manager does not scope by tenant.",
                        hint="Use TenantScopedManager.from_queryset(<a TenantScopedQuerySet "
                        "subclass>)() and keep Meta.base_manager_name = 'objects'.",
                        obj=model,
                        id="tenants.E001",
                    )
                )
    return errors
