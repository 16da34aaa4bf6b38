from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models these modules use.
        from catalog import exports
        from catalog.actions import CatalogAction
        from catalog.jobs import PRODUCTS_IMPORT
        from catalog.topics import CatalogTopic
        from kernel import audit, jobs
        from kernel.events import topics
        from kernel.exports import registry
        from kernel.permissions import Perm

        audit.register_actions(CatalogAction)
        # The events carry products and import jobs: readable by whoever may read the catalog.
        topics.register(CatalogTopic, read_permission=Perm.CATALOG_READ)
        jobs.register_kind(PRODUCTS_IMPORT)
        registry.register_tenant_resource("products", exports.product_rows)
        registry.register_tenant_resource("categories", exports.category_rows)
