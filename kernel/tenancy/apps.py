from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_reference_data(sender, using, **kwargs) -> None:
    from kernel.tenancy.models import Permission, Plan
    from kernel.tenancy.reference_data import seed_reference_data

    seed_reference_data(Plan, Permission)


class TenancyConfig(AppConfig):
    """The kernel's tenancy models and their database machinery. Its label stays `tenants`: the
    tables, migrations and row-level security policies carry it."""

    name = "kernel.tenancy"
    label = "tenants"

    def ready(self) -> None:
        # The checks register themselves on import.
        from kernel.tenancy import checks  # noqa: F401

        # Django's own way for data that must survive `flush`, as contenttypes and auth do.
        post_migrate.connect(_seed_reference_data, sender=self)
