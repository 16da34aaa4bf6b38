"""The topics of the catalog's domain events (kernel/events/topics.py), registered from
CatalogConfig.ready(). docs/notifications.md lists what each event carries."""

from enum import StrEnum


class CatalogTopic(StrEnum):
    PRODUCT_CREATED = "catalog.product.created"
    PRODUCT_UPDATED = "catalog.product.updated"
    PRODUCT_DELETED = "catalog.product.deleted"
    PRODUCT_LOW_STOCK = "catalog.product.low_stock"
    IMPORT_FINISHED = "catalog.import.finished"
