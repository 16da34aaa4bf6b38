"""Products and categories over GraphQL: the REST catalog's fields (camelCase), reads through its
selectors, writes through its services with its input serializers, so that both surfaces accept,
refuse, audit, publish and invalidate exactly alike.

A page of products costs a fixed number of queries whatever its size: the page itself, its
categories joined to it when asked for, and every product's related items in one more query
(`catalog.selectors.product_related_for`).
"""

import datetime
import decimal
import enum
import uuid
from typing import Any

import strawberry
from django.http import QueryDict
from strawberry.scalars import JSON
from strawberry.types import Info

from catalog import selectors, services
from catalog.api import filters
from catalog.api.serializers import CategoryInputSerializer, ProductInputSerializer
from catalog.models import Category as CategoryModel
from catalog.models import Product as ProductModel
from graphql_api.context import principal_of, selects
from graphql_api.relay import DEFAULT_PAGE_SIZE, Connection, connection
from kernel.permissions import Perm
from kernel.problems import Problem, ProblemType

# --- types -------------------------------------------------------------------------------------


@strawberry.type(description="A category of products; categories form a tree through `parent`.")
class Category:
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    version: int = strawberry.field(description="Give it as `expectedVersion` to change safely.")

    @strawberry.field(description="The category above this one, if any.")
    def parent(self, root: strawberry.Parent[CategoryModel]) -> "Category | None":
        return root.parent if root.parent_id is not None else None


@strawberry.type(description="Another active product of the same category (`Product.related`).")
class RelatedProduct:
    id: uuid.UUID
    sku: str
    name: str
    price: decimal.Decimal
    currency: str


@strawberry.type(description="A product of the tenant's catalog.")
class Product:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price: decimal.Decimal
    currency: str
    stock: int
    is_active: bool
    tags: list[str]
    attributes: JSON
    version: int = strawberry.field(description="Give it as `expectedVersion` to change safely.")
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @strawberry.field(description="The product's category, if any.")
    def category(self, root: strawberry.Parent[ProductModel]) -> Category | None:
        return root.category if root.category_id is not None else None

    @strawberry.field(
        description=(
            "Other active products of the same category, those sharing the most tags first "
            "(as REST's product detail)."
        )
    )
    def related(self, root: strawberry.Parent[ProductModel]) -> list[RelatedProduct]:
        loaded = getattr(root, "related_items", None)
        if loaded is None:
            loaded = selectors.product_related(product=root)
        return loaded


# Orderings as REST's `?ordering=` offers them: `PRICE` is `price`, `PRICE_DESC` is `-price`.
ProductOrder = enum.Enum(
    "ProductOrder",
    {
        f"{name.upper()}{suffix}": f"{sign}{name}"
        for name in selectors.PRODUCT_ORDERINGS
        for sign, suffix in (("", ""), ("-", "_DESC"))
    },
)
CategoryOrder = enum.Enum(
    "CategoryOrder",
    {
        f"{name.upper()}{suffix}": f"{sign}{name}"
        for name in selectors.CATEGORY_ORDERINGS
        for sign, suffix in (("", ""), ("-", "_DESC"))
    },
)
strawberry.enum(ProductOrder, description="How a product list is ordered (REST's `ordering`).")
strawberry.enum(CategoryOrder, description="How a category list is ordered (REST's `ordering`).")


@strawberry.input(description="Filters of a product list, as REST's query parameters.")
class ProductFilter:
    search: str | None = strawberry.UNSET
    category: uuid.UUID | None = strawberry.UNSET
    price_min: decimal.Decimal | None = strawberry.UNSET
    price_max: decimal.Decimal | None = strawberry.UNSET
    in_stock: bool | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    tag: str | None = strawberry.UNSET
    updated_since: datetime.datetime | None = strawberry.UNSET


@strawberry.input(description="A new product: `sku`, `name` and `price` are required.")
class ProductCreateInput:
    sku: str
    name: str
    price: decimal.Decimal
    description: str | None = strawberry.UNSET
    currency: str | None = strawberry.UNSET
    stock: int | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    category: uuid.UUID | None = strawberry.UNSET
    tags: list[str] | None = strawberry.UNSET
    attributes: JSON | None = strawberry.UNSET


@strawberry.input(description="What to change on a product: only the fields given change.")
class ProductUpdateInput:
    sku: str | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    price: decimal.Decimal | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    currency: str | None = strawberry.UNSET
    stock: int | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    category: uuid.UUID | None = strawberry.UNSET
    tags: list[str] | None = strawberry.UNSET
    attributes: JSON | None = strawberry.UNSET


@strawberry.input(description="A new category; the slug is made from the name when not given.")
class CategoryCreateInput:
    name: str
    slug: str | None = strawberry.UNSET
    parent: uuid.UUID | None = strawberry.UNSET


@strawberry.input(description="What to change on a category: only the fields given change.")
class CategoryUpdateInput:
    name: str | None = strawberry.UNSET
    slug: str | None = strawberry.UNSET
    parent: uuid.UUID | None = strawberry.UNSET


@strawberry.type(description="What a delete removed.")
class Deleted:
    id: uuid.UUID


# --- queries -----------------------------------------------------------------------------------


@strawberry.type
class CatalogQuery:
    @strawberry.field(description="A product by id (the UUID REST uses). Needs catalog.read.")
    def product(self, info: Info, id: uuid.UUID) -> Product | None:
        principal_of(info, Perm.CATALOG_READ)
        return _product(id)

    @strawberry.field(
        description="The tenant's products, filtered and ordered as REST's list. Needs "
        "catalog.read."
    )
    def products(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: ProductFilter | None = None,
        order_by: ProductOrder = ProductOrder.CREATED_AT_DESC,  # type: ignore[attr-defined]
    ) -> Connection[Product]:
        principal_of(info, Perm.CATALOG_READ)
        queryset = selectors.product_list(
            filters=filters.product_filters(_as_params(filter)), ordering=order_by.value
        )
        if selects(info, "edges", "node", "category"):
            queryset = queryset.select_related("category")

        def prepare(rows: list[ProductModel]) -> None:
            if selects(info, "edges", "node", "related"):
                related = selectors.product_related_for(products=rows)
                for row in rows:
                    row.related_items = related[row.pk]

        return connection(queryset, first=first, after=after, prepare=prepare)

    @strawberry.field(description="A category by id. Needs catalog.read.")
    def category(self, info: Info, id: uuid.UUID) -> Category | None:
        principal_of(info, Perm.CATALOG_READ)
        return _category(id)

    @strawberry.field(description="The tenant's categories. Needs catalog.read.")
    def categories(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        parent: uuid.UUID | None = None,
        order_by: CategoryOrder = CategoryOrder.NAME,  # type: ignore[attr-defined]
    ) -> Connection[Category]:
        principal_of(info, Perm.CATALOG_READ)
        queryset = selectors.category_list(parent_id=parent, ordering=order_by.value)
        if selects(info, "edges", "node", "parent"):
            queryset = queryset.select_related("parent")
        return connection(queryset, first=first, after=after)


# --- mutations ---------------------------------------------------------------------------------


@strawberry.type
class CatalogMutation:
    @strawberry.mutation(description="Create a product. Needs catalog.write.")
    def product_create(self, info: Info, input: ProductCreateInput) -> Product | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        data = _validated(ProductInputSerializer, input, principal, partial=False)
        return services.product_create(tenant=principal.tenant, actor=principal, data=data)

    @strawberry.mutation(
        description="Change a product; with `expectedVersion`, only if it is still that "
        "version (else PRECONDITION_FAILED). Needs catalog.write."
    )
    def product_update(
        self,
        info: Info,
        id: uuid.UUID,
        input: ProductUpdateInput,
        expected_version: int | None = None,
    ) -> Product | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        product = _product(id)
        data = _validated(ProductInputSerializer, input, principal, partial=True)
        return services.product_update(
            tenant=principal.tenant,
            actor=principal,
            product=product,
            data=data,
            expected_versions=_versions(expected_version),
            replace=False,
        )

    @strawberry.mutation(description="Delete a product. Needs catalog.write.")
    def product_delete(
        self, info: Info, id: uuid.UUID, expected_version: int | None = None
    ) -> Deleted | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        product = _product(id)
        services.product_delete(
            tenant=principal.tenant,
            actor=principal,
            product=product,
            expected_versions=_versions(expected_version),
        )
        return Deleted(id=id)

    @strawberry.mutation(description="Create a category. Needs catalog.write.")
    def category_create(self, info: Info, input: CategoryCreateInput) -> Category | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        data = _validated(CategoryInputSerializer, input, principal, partial=False)
        return services.category_create(tenant=principal.tenant, actor=principal, data=data)

    @strawberry.mutation(description="Change a category. Needs catalog.write.")
    def category_update(
        self,
        info: Info,
        id: uuid.UUID,
        input: CategoryUpdateInput,
        expected_version: int | None = None,
    ) -> Category | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        category = _category(id)
        data = _validated(CategoryInputSerializer, input, principal, partial=True)
        return services.category_update(
            tenant=principal.tenant,
            actor=principal,
            category=category,
            data=data,
            expected_versions=_versions(expected_version),
        )

    @strawberry.mutation(
        description="Delete a category that has no subcategories or products (else CONFLICT). "
        "Needs catalog.write."
    )
    def category_delete(
        self, info: Info, id: uuid.UUID, expected_version: int | None = None
    ) -> Deleted | None:
        principal = principal_of(info, Perm.CATALOG_WRITE)
        category = _category(id)
        services.category_delete(
            tenant=principal.tenant,
            actor=principal,
            category=category,
            expected_versions=_versions(expected_version),
        )
        return Deleted(id=id)


# --- helpers -----------------------------------------------------------------------------------


def _product(product_id: uuid.UUID) -> ProductModel:
    product = selectors.product_get(product_id=product_id)
    if product is None:
        raise Problem(ProblemType.NOT_FOUND, detail=f'Product "{product_id}" was not found.')
    return product


def _category(category_id: uuid.UUID) -> CategoryModel:
    category = selectors.category_get(category_id=category_id)
    if category is None:
        raise Problem(ProblemType.NOT_FOUND, detail=f'Category "{category_id}" was not found.')
    return category


def _versions(expected_version: int | None) -> frozenset[int] | None:
    return None if expected_version is None else frozenset({expected_version})


def _given(input_object: Any) -> dict[str, Any]:
    """The fields of a GraphQL input that the client gave, by REST's (snake_case) names."""
    return {
        name: value for name, value in vars(input_object).items() if value is not strawberry.UNSET
    }


def _validated(serializer_class: type, input_object: Any, principal: Any, *, partial: bool):
    """The input, validated by the serializer REST validates the same resource with: the same
    values accepted and refused, with the same messages (BAD_USER_INPUT names each field)."""
    serializer = serializer_class(
        data=_given(input_object), partial=partial, context={"tenant": principal.tenant}
    )
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _as_params(product_filter: ProductFilter | None) -> QueryDict:
    """A `filter` argument as the query string REST's list would get, for the shared
    validation."""
    params = QueryDict(mutable=True)
    for name, value in _given(product_filter).items() if product_filter else ():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, datetime.datetime):
            value = value.isoformat()
        params[name] = str(value)
    return params


__all__ = ["CatalogMutation", "CatalogQuery"]
