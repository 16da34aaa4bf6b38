"""The audit actions of the catalog (kernel/audit.py), registered from CatalogConfig.ready().
The values are what the audit log stores: they never change."""

from enum import StrEnum


class CatalogAction(StrEnum):
    """What categories, products and bulk imports go through."""

    CATEGORY_CREATED = "catalog.category.created"
    CATEGORY_UPDATED = "catalog.category.updated"
    CATEGORY_DELETED = "catalog.category.deleted"
    PRODUCT_CREATED = "catalog.product.created"
    PRODUCT_UPDATED = "catalog.product.updated"
    PRODUCT_DELETED = "catalog.product.deleted"
    IMPORT_STARTED = "catalog.import.started"
