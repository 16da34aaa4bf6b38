"""Writes on categories and products. Keyword-only arguments, the tenant among them (it must be
the tenant in context); one transaction each.

Every write here, whoever calls it (the API, the admin, a command), does the same three things
besides the write itself, so that none can be forgotten on one path:

- `catalog_changed()`: cached catalog reads of the tenant are invalidated (catalog/cache.py);
- events for the notifications work, published after commit (kernel/events/):
  catalog.product.created / updated / deleted, and catalog.product.low_stock when an update
  takes the stock from at least the tenant's threshold to below it;
- optimistic concurrency: each write is a conditional UPDATE or DELETE on the row version
  (`WHERE version IN (...)`), so of two writers holding the same version only one wins. With
  If-Match (`expected_versions`) the loser gets 412; without, the write is re-applied on top of
  the newer row (last writer wins, but nothing is half-applied).

Creating a product counts against the plan's `max_products` (kernel/quotas.py): past it, 403
quota-exceeded. Uniqueness (SKU, category slug) is checked first for a clear message, and
enforced by the database constraint, whose violation (a concurrent insert) is caught in a
savepoint: 409 either way.
"""

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypedDict

from django.db import IntegrityError, transaction
from django.db.models import F, Model
from django.db.models.deletion import RestrictedError
from django.utils import timezone

from catalog.actions import CatalogAction
from catalog.cache import catalog_changed
from catalog.currencies import CURRENCY_CODES, DEFAULT_CURRENCY
from catalog.models import PRODUCT_WRITABLE_FIELDS, Category, Product
from catalog.selectors import (
    category_ancestor_ids,
    category_has_dependents,
    category_slug_taken,
    product_sku_taken,
    product_total,
)
from catalog.topics import CatalogTopic
from catalog.validators import normalize_tags
from kernel import audit
from kernel.context import require_tenant_id
from kernel.events import publish
from kernel.locks import lock_for_transaction
from kernel.principals import Principal
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import CrossTenantWrite, Tenant

DEFAULT_LOW_STOCK_THRESHOLD = 5
# Attempts at a write without If-Match that keeps losing to concurrent writers.
MAX_WRITE_ATTEMPTS = 5


Actor = Principal | Model | None  # a tenant principal, or an operator's user in the admin


# --- tenant settings ---------------------------------------------------------------------------


def tenant_settings(tenant: Tenant | None = None) -> dict[str, Any]:
    """The settings of `tenant`, or of the tenant in context read from the database."""
    if tenant is not None:
        return dict(tenant.settings or {})
    tenant_id = require_tenant_id()
    return dict(Tenant.objects.values_list("settings", flat=True).get(pk=tenant_id) or {})


class ProductFields(TypedDict, total=False):
    """What a product write may set (the API's input serializer, the admin's form, the import)."""

    sku: str
    name: str
    description: str
    price: Decimal
    currency: str
    stock: int
    is_active: bool
    category: Category | None
    tags: list[str]
    attributes: dict[str, Any]


class CategoryFields(TypedDict, total=False):
    name: str
    slug: str
    parent: Category | None


def _in_tenant(tenant: Tenant, *objs: Product | Category) -> None:
    """The writes below run in the tenant in context, which must be `tenant`, and so must every
    object they are given: the scoped managers and row-level security would refuse anything else
    anyway, this says so before a write is attempted."""
    if require_tenant_id() != tenant.id or any(obj.tenant_id != tenant.id for obj in objs):
        raise CrossTenantWrite(f"A write for tenant {tenant.id} outside its context.")


def default_currency(settings: Mapping[str, Any]) -> str:
    currency = settings.get("currency")
    return (
        currency if isinstance(currency, str) and currency in CURRENCY_CODES else DEFAULT_CURRENCY
    )


def low_stock_threshold(settings: Mapping[str, Any]) -> int:
    threshold = settings.get("low_stock_threshold")
    if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold >= 0:
        return threshold
    return DEFAULT_LOW_STOCK_THRESHOLD


# --- products ----------------------------------------------------------------------------------

PRODUCT_WRITABLE = PRODUCT_WRITABLE_FIELDS


@transaction.atomic
def product_create(*, tenant: Tenant, actor: Actor, data: ProductFields) -> Product:
    _in_tenant(tenant)
    values = _writable(data, PRODUCT_WRITABLE)
    if "currency" not in values:
        values["currency"] = default_currency(tenant_settings(tenant))
    _check_category(values.get("category"))
    _check_sku_free(values["sku"])
    # Locks the tenant's row, so that two creates cannot both take the plan's last slot.
    enforce_quota(
        tenant=tenant.id,
        resource=Resource.PRODUCTS,
        count=product_total,
    )
    try:
        with transaction.atomic():
            product = Product.objects.create(**values)
    except IntegrityError as exc:
        _raise_conflict_if_duplicate(exc, values)
        raise
    catalog_changed()
    _audit(CatalogAction.PRODUCT_CREATED, product, audit.created(_snapshot(product)))
    publish(topic=CatalogTopic.PRODUCT_CREATED, data=_product_event(product), actor=actor)
    return product


@transaction.atomic
def product_update(
    *,
    tenant: Tenant,
    actor: Actor,
    product: Product,
    data: ProductFields,
    expected_versions: frozenset[int] | None = None,
    replace: bool = False,
) -> Product:
    """Change the fields in `data`; with `replace` (PUT), every field the data omits is reset
    to its default (the serializer fills those in; the currency is the tenant's default)."""
    _in_tenant(tenant, product)
    values = _writable(data, PRODUCT_WRITABLE)
    if replace and "currency" not in values:
        values["currency"] = default_currency(tenant_settings(tenant))
    _check_category(values.get("category"))
    if "sku" in values and values["sku"] != product.sku:
        _check_sku_free(values["sku"], exclude_id=product.pk)

    before = _write_conditionally(Product, product, values, expected_versions)
    product = Product.objects.get(pk=product.pk)
    catalog_changed()
    _audit(
        CatalogAction.PRODUCT_UPDATED, product, audit.diff(_snapshot(before), _snapshot(product))
    )

    changed = sorted(name for name in values if _value(before, name) != _value(product, name))
    publish(
        topic=CatalogTopic.PRODUCT_UPDATED,
        data={**_product_event(product), "changed": changed},
        actor=actor,
    )
    threshold = low_stock_threshold(tenant_settings(tenant))
    if before.stock >= threshold > product.stock:
        publish(
            topic=CatalogTopic.PRODUCT_LOW_STOCK,
            data={**_product_event(product), "threshold": threshold},
            actor=actor,
        )
    return product


@transaction.atomic
def product_delete(
    *,
    tenant: Tenant,
    actor: Actor,
    product: Product,
    expected_versions: frozenset[int] | None = None,
) -> None:
    _in_tenant(tenant, product)
    _delete_conditionally(Product, product, expected_versions)
    catalog_changed()
    _audit(CatalogAction.PRODUCT_DELETED, product, audit.deleted(_snapshot(product)))
    publish(
        topic=CatalogTopic.PRODUCT_DELETED,
        data={"id": product.pk, "sku": product.sku, "name": product.name},
        actor=actor,
    )


# What the audit log keeps of each object: every field a client can write, foreign keys as ids.
_AUDITED_FIELDS = {
    Product: tuple("category_id" if f == "category" else f for f in PRODUCT_WRITABLE_FIELDS),
    Category: ("name", "slug", "parent_id"),
}


def _snapshot(obj: Product | Category) -> dict[str, Any]:
    return {field: getattr(obj, field) for field in _AUDITED_FIELDS[type(obj)]}


def _audit(action: str, obj: Product | Category, changes: Mapping[str, Any]) -> None:
    """In the transaction of the change: there is never a change without its event."""
    audit.record(
        tenant_id=obj.tenant_id,
        action=action,
        target_type=type(obj)._meta.model_name,
        target_id=obj.pk,
        changes=changes,
    )


def _value(product: Product, name: str) -> Any:
    # The category by id: comparing instances would load both.
    return product.category_id if name == "category" else getattr(product, name)


def _check_sku_free(sku: str, *, exclude_id: uuid.UUID | None = None) -> None:
    if product_sku_taken(sku=sku, exclude_id=exclude_id):
        raise _duplicate_sku(sku)


def _duplicate_sku(sku: str) -> Problem:
    return Problem(
        ProblemType.CONFLICT, detail=f'A product with SKU "{sku}" already exists in this tenant.'
    )


def _product_event(product: Product) -> dict[str, Any]:
    return {
        "id": product.pk,
        "sku": product.sku,
        "name": product.name,
        "price": product.price,
        "currency": product.currency,
        "stock": product.stock,
        "is_active": product.is_active,
        "version": product.version,
    }


# --- categories --------------------------------------------------------------------------------

CATEGORY_WRITABLE = ("name", "slug", "parent")


@transaction.atomic
def category_create(*, tenant: Tenant, actor: Actor, data: CategoryFields) -> Category:
    _in_tenant(tenant)
    values = _writable(data, CATEGORY_WRITABLE)
    _check_category(values.get("parent"), field="parent")
    _check_slug_free(values["slug"])
    try:
        with transaction.atomic():
            category = Category.objects.create(**values)
    except IntegrityError as exc:
        _raise_conflict_if_duplicate(exc, values)
        raise
    catalog_changed()
    _audit(CatalogAction.CATEGORY_CREATED, category, audit.created(_snapshot(category)))
    return category


@transaction.atomic
def category_update(
    *,
    tenant: Tenant,
    actor: Actor,
    category: Category,
    data: CategoryFields,
    expected_versions: frozenset[int] | None = None,
) -> Category:
    _in_tenant(tenant, category)
    values = _writable(data, CATEGORY_WRITABLE)
    if "parent" in values:
        _check_parent(category, values["parent"])
    if "slug" in values and values["slug"] != category.slug:
        _check_slug_free(values["slug"], exclude_id=category.pk)
    before = _write_conditionally(Category, category, values, expected_versions)
    after = Category.objects.get(pk=category.pk)
    catalog_changed()
    _audit(CatalogAction.CATEGORY_UPDATED, after, audit.diff(_snapshot(before), _snapshot(after)))
    return after


@transaction.atomic
def category_delete(
    *,
    tenant: Tenant,
    actor: Actor,
    category: Category,
    expected_versions: frozenset[int] | None = None,
) -> None:
    _in_tenant(tenant, category)
    if category_has_dependents(category=category):
        raise _category_in_use()
    try:
        with transaction.atomic():
            _delete_conditionally(Category, category, expected_versions)
    except RestrictedError as exc:  # a product or child added since the check above
        raise _category_in_use() from exc
    catalog_changed()
    _audit(CatalogAction.CATEGORY_DELETED, category, audit.deleted(_snapshot(category)))


def _category_in_use() -> Problem:
    return Problem(
        ProblemType.CONFLICT,
        detail="The category still has subcategories or products: move or delete them first.",
    )


def _check_slug_free(slug: str, *, exclude_id: uuid.UUID | None = None) -> None:
    if category_slug_taken(slug=slug, exclude_id=exclude_id):
        raise _duplicate_slug(slug)


def _duplicate_slug(slug: str) -> Problem:
    return Problem(
        ProblemType.CONFLICT, detail=f'A category with slug "{slug}" already exists in this tenant.'
    )


def _check_parent(category: Category, parent: Category | None) -> None:
    """The new parent must not be the category itself or below it: the tree stays a tree."""
    if parent is None:
        return
    _check_category(parent, field="parent")
    # Two concurrent moves (A under B, B under A) would each pass the check alone: moves in one
    # tenant's tree take turns.
    lock_for_transaction(f"catalog-tree:{require_tenant_id()}")
    if category.pk in category_ancestor_ids(category_id=parent.pk):
        raise InvalidInput(
            {"parent": ["A category cannot be moved below itself or one of its subcategories."]}
        )


# --- shared --------------------------------------------------------------------------------


def _writable(data: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    # Only named fields are written, whatever else the caller passed (tenant, id, version ...).
    values = {name: data[name] for name in allowed if name in data}
    if "tags" in values:  # the same tags whichever way in (API, admin, import)
        values["tags"] = normalize_tags(values["tags"])
    return values


def _check_category(category: Category | None, *, field: str = "category") -> None:
    """Serializers resolve categories within the tenant; this holds every other caller to it."""
    if category is not None and category.tenant_id != require_tenant_id():
        raise InvalidInput({field: [f'Category "{category.pk}" does not exist.']})


def _write_conditionally(
    model: type[Product] | type[Category],
    instance: Product | Category,
    values: dict[str, Any],
    expected_versions: frozenset[int] | None,
) -> Product | Category:
    """UPDATE ... SET ..., version = version + 1 WHERE id = ... AND version IN (...).

    Returns the row as it was just before the write that won.
    """
    current = instance
    for _ in range(MAX_WRITE_ATTEMPTS):
        if expected_versions is not None and current.version not in expected_versions:
            # The caller's copy may be older than the version the client holds: look again.
            current = _fresh(model, current.pk)
            if current.version not in expected_versions:
                raise Problem(ProblemType.PRECONDITION_FAILED)
        try:
            with transaction.atomic():
                updated = model.objects.filter(pk=current.pk, version=current.version).update(
                    **values, version=F("version") + 1, updated_at=timezone.now()
                )
        except IntegrityError as exc:
            _raise_conflict_if_duplicate(exc, values)
            raise
        if updated:
            return current
        # Someone else wrote in between: with If-Match that is a 412, without it try again
        # on top of what they wrote.
        current = _fresh(model, current.pk)
        if expected_versions is not None and current.version not in expected_versions:
            raise Problem(ProblemType.PRECONDITION_FAILED)
    raise Problem(ProblemType.CONFLICT, detail="The resource is changing too often; retry.")


def _delete_conditionally(
    model: type[Product] | type[Category],
    instance: Product | Category,
    expected_versions: frozenset[int] | None,
) -> None:
    rows = model.objects.filter(pk=instance.pk)
    if expected_versions is not None:
        rows = rows.filter(version__in=expected_versions)
    deleted, _ = rows.delete()
    if not deleted:
        _fresh(model, instance.pk)  # 404 if it is gone
        raise Problem(ProblemType.PRECONDITION_FAILED)


def _fresh(model: type[Product] | type[Category], pk: uuid.UUID) -> Any:
    current = model.objects.filter(pk=pk).first()
    if current is None:
        raise Problem(ProblemType.NOT_FOUND)
    return current


def _raise_conflict_if_duplicate(exc: IntegrityError, values: Mapping[str, Any]) -> None:
    # PostgreSQL names the constraint; SQLite names the columns.
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) or ""
    message = str(exc)
    if constraint == "product_sku_unique" or "catalog_product.sku" in message:
        raise _duplicate_sku(values.get("sku", "")) from exc
    if constraint == "category_slug_unique" or "catalog_category.slug" in message:
        raise _duplicate_slug(values.get("slug", "")) from exc
