"""Categories (a tree) and products, owned by a tenant.

Every unique constraint starts with the tenant (docs/tenancy.md), and every index a list filters
or orders by starts with it too, since every query the API runs is filtered by tenant first.
`(tenant, sku)` is the natural key: bulk imports upsert on it (`bulk_create(update_conflicts=True,
unique_fields=["tenant", "sku"])`), which is why tags are a JSON list on the row rather than a
table of their own.

On PostgreSQL, migration 0002 adds what the ORM cannot declare portably: a stored full-text
document (`search_document`, generated from name, sku and description), GIN indexes on it and on
`tags`, and foreign keys that keep a category's products and children in its tenant. The embedded
SQLite default goes without them.
"""

import uuid

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from catalog import validators as v
from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager, TenantScopedQuerySet

# The text search configuration of `search_document` (migration 0002) and of search queries:
# "simple" lower-cases and splits, without language stemming, which suits SKUs, brand names and
# catalogs in several languages alike.
SEARCH_CONFIG = "simple"


class Category(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=v.CATEGORY_NAME_MAX_LENGTH, validators=[v.validate_storable_text]
    )
    slug = models.SlugField(max_length=v.CATEGORY_SLUG_MAX_LENGTH, allow_unicode=False)
    # RESTRICT, not PROTECT: deleting a category that still has children is refused, yet deleting
    # the whole tenant (which cascades to both) is not.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="children"
    )
    # Internal optimistic-concurrency counter behind the ETag and If-Match; not in the API body.
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        verbose_name_plural = "categories"
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slug"], name="category_slug_unique"),
            models.CheckConstraint(
                condition=~Q(parent=models.F("id")), name="category_not_own_parent"
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "name", "id"], name="category_name_idx"),
            models.Index(fields=["tenant", "created_at", "id"], name="category_created_idx"),
            models.Index(fields=["tenant", "parent"], name="category_parent_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class ProductQuerySet(TenantScopedQuerySet):
    def active(self):
        return self.filter(is_active=True)


# What a client writes on a product, in the order the API and CSV files show it. The services,
# serializers, bulk import/export and the audit log all take the list from here.
PRODUCT_WRITABLE_FIELDS = (
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "stock",
    "is_active",
    "category",
    "tags",
    "attributes",
)


class Product(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sku = models.CharField(
        max_length=v.SKU_MAX_LENGTH,
        validators=[RegexValidator(v.SKU_PATTERN, "Letters, digits and . _ / - only.")],
    )
    name = models.CharField(max_length=v.NAME_MAX_LENGTH, validators=[v.validate_storable_text])
    description = models.TextField(blank=True, default="", validators=[v.validate_storable_text])
    price = models.DecimalField(
        max_digits=v.PRICE_MAX_DIGITS,
        decimal_places=v.PRICE_DECIMAL_PLACES,
        validators=[MinValueValidator(0)],
    )
    currency = models.CharField(max_length=3, validators=[v.validate_currency])
    stock = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    is_active = models.BooleanField(default=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.RESTRICT, related_name="products"
    )
    attributes = models.JSONField(default=dict, blank=True, validators=[v.validate_attributes])
    tags = models.JSONField(default=list, blank=True, validators=[v.validate_tags])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # +1 on every write (services.product_update): the ETag's and If-Match's basis.
    version = models.PositiveIntegerField(default=1, editable=False)

    objects = TenantScopedManager.from_queryset(ProductQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        ordering = ["-created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "sku"], name="product_sku_unique"),
            # The last line of defence under imports and raw SQL; the API refuses them as 400s.
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_not_negative"),
        ]
        # One per ordering offered (each ends with id, the pagination's tie-breaker) and per
        # filter; the GIN indexes for search and tags are in migration 0002 (PostgreSQL only).
        indexes = [
            models.Index(fields=["tenant", "created_at", "id"], name="product_created_idx"),
            models.Index(fields=["tenant", "updated_at", "id"], name="product_updated_idx"),
            models.Index(fields=["tenant", "name", "id"], name="product_name_idx"),
            models.Index(fields=["tenant", "price", "id"], name="product_price_idx"),
            models.Index(fields=["tenant", "category", "is_active"], name="product_category_idx"),
            models.Index(fields=["tenant", "is_active"], name="product_active_idx"),
            models.Index(fields=["tenant", "stock"], name="product_stock_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class ProductCount(TenantOwnedModel):
    """How many products a tenant has, kept by the database itself (PostgreSQL only).

    The plan's product quota is checked on every create under the tenant's lock; counting the
    rows there costs in proportion to the catalog (21 ms at 100,000 products) and makes every
    create of the tenant wait for it. Statement triggers on catalog_product (migration 0004) add
    and subtract the rows each INSERT or DELETE actually wrote, whatever wrote them (services,
    bulk import upserts, seeding, a tenant's purge), so no code path can forget it. Read it
    through `catalog.selectors.product_total()`; SQLite, the embedded default, counts instead.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    products = models.BigIntegerField(default=0)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="product_count_one_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.products} products of tenant {self.tenant_id}"
