from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_reference_data(sender, using, **kwargs) -> None:
    from tenants.models import Permission, Plan
    from tenants.reference_data import seed_reference_data

    seed_reference_data(Plan, Permission)


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self) -> None:
        # checks and openapi register themselves on import.
        from tenants import audit, checks, openapi, propagation  # noqa: F401

        propagation.register()
        audit.register()
        # Django's own way for data that must survive `flush`, as contenttypes and auth do.
        post_migrate.connect(_seed_reference_data, sender=self)
