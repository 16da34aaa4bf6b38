"""Categories and products over HTTP. Thin: parsing here, reads in selectors, writes in services.

Reads (list and retrieve) are answered from the catalog cache (catalog/cache.py) as ready JSON
bytes with their ETag; on a hit no SQL runs and no serializer either. Writes go through the
services, which invalidate that cache, and answer with the resource and its new ETag.
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from catalog import cache as catalog_cache
from catalog import selectors, services
from catalog.api import filters
from catalog.api import serializers as s
from catalog.api.conditional import conditional_get, if_match_versions
from catalog.cache import CachedResponse, cached_response, etag_for
from catalog.models import Category, Product
from kernel.api import cached_reads
from kernel.api.base import TenantViewSet, validated_input
from kernel.api.cached_reads import CachedRead
from kernel.idempotency import KEY_PATTERN, idempotent
from kernel.permissions import Perm
from kernel.problems import PROBLEM_CONTENT_TYPE

READ_WRITE_PERMISSIONS = {
    "list": Perm.CATALOG_READ,
    "retrieve": Perm.CATALOG_READ,
    "create": Perm.CATALOG_WRITE,
    "update": Perm.CATALOG_WRITE,
    "partial_update": Perm.CATALOG_WRITE,
    "destroy": Perm.CATALOG_WRITE,
}

_renderer = JSONRenderer()


def render(data: Any) -> bytes:
    """The bytes DRF's JSON response carries (compact), so that the ETag is of what is sent."""
    return _renderer.render(data)


def detail_key(url_kwargs: Mapping[str, Any], fields: tuple[str, ...] | None) -> str:
    return f"{url_kwargs['pk']}|{','.join(fields) if fields else '*'}"


def catalog_read(request: HttpRequest, kind: str, key: str) -> CachedRead | None:
    """A catalog GET as kernel/api/cached_reads.py answers it before DRF, on a hit."""
    if not catalog_cache.servable():
        return None
    return CachedRead(
        version_key=catalog_cache.VERSION_KEY,
        entry_key=lambda version: catalog_cache.entry_key_for(version, kind=kind, key=key),
        respond=lambda stored: conditional_get(request, catalog_cache.hit(kind, stored)),
    )


# --- OpenAPI pieces ----------------------------------------------------------------------------


def _query(name: str, schema: Any, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, schema, OpenApiParameter.QUERY, description=description)


FIELDS_PARAMETER = _query(
    "fields", OpenApiTypes.STR, "Comma-separated fields to return (sparse response)."
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="An ETag from an earlier response: 304 with no body if it is still current.",
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The ETag the change is based on: 412 if the resource changed since.",
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    pattern=KEY_PATTERN,
    description=(
        "1 to 255 visible ASCII characters (a UUID is a good choice). A retry with the same key "
        "and body within 24 hours replays the first response (with `Idempotent-Replayed: true`) "
        "and creates nothing."
    ),
)
PRODUCT_LIST_PARAMETERS = [
    _query("search", OpenApiTypes.STR, "Words to find in name, SKU and description (prefixes)."),
    _query("category", OpenApiTypes.UUID, "A category id; includes its subcategories."),
    _query("price_min", OpenApiTypes.DECIMAL, "Price at least this."),
    _query("price_max", OpenApiTypes.DECIMAL, "Price at most this."),
    _query("in_stock", OpenApiTypes.BOOL, "true: stock above 0; false: stock 0."),
    _query("is_active", OpenApiTypes.BOOL, "Active or inactive products only."),
    _query("tag", OpenApiTypes.STR, "Products carrying this tag (exact)."),
    _query("updated_since", OpenApiTypes.DATETIME, "Updated at or after this time (RFC 3339)."),
    _query(
        "ordering",
        OpenApiTypes.STR,
        f"One of {', '.join(selectors.PRODUCT_ORDERINGS)}, `-` for descending; "
        f"default {selectors.DEFAULT_PRODUCT_ORDERING}.",
    ),
    FIELDS_PARAMETER,
    IF_NONE_MATCH,
]
CATEGORY_LIST_PARAMETERS = [
    _query("parent", OpenApiTypes.UUID, "Direct children of this category only."),
    _query(
        "ordering",
        OpenApiTypes.STR,
        f"One of {', '.join(selectors.CATEGORY_ORDERINGS)}, `-` for descending; "
        f"default {selectors.DEFAULT_CATEGORY_ORDERING}.",
    ),
    FIELDS_PARAMETER,
    IF_NONE_MATCH,
]


def _problem(status: int, description: str) -> dict:
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(PROBLEM_SCHEMA, description=description)
    }


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
NOT_MODIFIED = {
    304: OpenApiResponse(description="Not modified: If-None-Match holds the current ETag.")
}
PRECONDITION_FAILED = _problem(
    412, "If-Match does not hold the current ETag (precondition-failed)."
)
CREATE_PROBLEMS = {
    **_problem(
        409,
        "The SKU or slug is taken (conflict), or a request with this Idempotency-Key is still "
        "running (idempotency-key-in-use).",
    ),
    **_problem(422, "The Idempotency-Key was used with another request (idempotency-key-reused)."),
    **_problem(503, "Idempotency-Key given, but the store of keys is unavailable; retry."),
}
UPDATE_PROBLEMS = {**_problem(409, "The SKU or slug is taken (conflict)."), **PRECONDITION_FAILED}
DELETE_PROBLEMS = {
    **_problem(409, "The category still has subcategories or products (conflict)."),
    **PRECONDITION_FAILED,
}


# --- products ----------------------------------------------------------------------------------


class ProductViewSet(TenantViewSet):
    """Products of the caller's tenant."""

    model = Product
    serializer_class = s.ProductSerializer
    required_permissions = READ_WRITE_PERMISSIONS

    def cached_read(self, request: HttpRequest) -> CachedRead | None:
        try:
            if self.action == "list":
                page_size = self.paginator.page_size_of(request.META.get("QUERY_STRING", ""))
                query, _ = filters.product_list_query(request, page_size=page_size)
                return catalog_read(request, "product_list", query.cache_key(request))
            if self.action == "retrieve":
                fields = filters.product_detail_fields(request)
                return catalog_read(request, "product_detail", detail_key(self.kwargs, fields))
        except ValidationError:
            return None  # the view answers with the 400
        return None

    @extend_schema(
        parameters=PRODUCT_LIST_PARAMETERS,
        responses={200: s.ProductSerializer(many=True), **NOT_MODIFIED},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any):
        query, product_filters = filters.paged(request, self.paginator, filters.product_list_query)

        def compute() -> CachedResponse:
            queryset = selectors.product_list(filters=product_filters, ordering=query.ordering)
            # Rows as dictionaries of the columns the page writes: no model is built for a list.
            columns = filters.model_fields_for(
                query.fields or s.PRODUCT_FIELDS, ordering=query.ordering
            )
            page = self.paginator.paginate_queryset(queryset.values(*columns), request, view=self)
            data = s.list_rows(s.ProductSerializer, page, query.fields)
            body = render(self.paginator.get_paginated_data(data))
            return CachedResponse(body=body, etag=etag_for(body))

        cached = cached_response(
            kind="product_list",
            key=query.cache_key(request),
            timeout=settings.CATALOG_LIST_CACHE_SECONDS,
            compute=compute,
            missed=cached_reads.missed(request),
        )
        return conditional_get(request, cached)

    @extend_schema(
        parameters=[FIELDS_PARAMETER, IF_NONE_MATCH],
        responses={200: s.ProductDetailSerializer, **NOT_MODIFIED},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any):
        fields = filters.product_detail_fields(request)

        def compute() -> CachedResponse:
            return self._detail(self.get_object(), fields=fields)

        cached = cached_response(
            kind="product_detail",
            key=detail_key(self.kwargs, fields),
            timeout=settings.CATALOG_DETAIL_CACHE_SECONDS,
            compute=compute,
            missed=cached_reads.missed(request),
        )
        return conditional_get(request, cached)

    @extend_schema(
        parameters=[IDEMPOTENCY_KEY],
        request=s.ProductInputSerializer,
        responses={201: s.ProductDetailSerializer, **CREATE_PROBLEMS},
    )
    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = validated_input(self, s.ProductInputSerializer)
        product = services.product_create(
            tenant=self.principal.tenant, actor=self.principal, data=data
        )
        return self._written(product, status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[IF_MATCH],
        request=s.ProductInputSerializer,
        responses={200: s.ProductDetailSerializer, **UPDATE_PROBLEMS},
    )
    def update(self, request: Request, *args: Any, partial: bool = False, **kwargs: Any):
        product = self.get_object()
        data = validated_input(self, s.ProductInputSerializer, partial=partial)
        product = services.product_update(
            tenant=self.principal.tenant,
            actor=self.principal,
            product=product,
            data=data,
            expected_versions=if_match_versions(request),
            replace=not partial,
        )
        return self._written(product, status.HTTP_200_OK)

    @extend_schema(
        parameters=[IF_MATCH],
        request=s.ProductInputSerializer,
        responses={200: s.ProductDetailSerializer, **UPDATE_PROBLEMS},
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(parameters=[IF_MATCH], responses={204: None, **PRECONDITION_FAILED})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.product_delete(
            tenant=self.principal.tenant,
            actor=self.principal,
            product=self.get_object(),
            expected_versions=if_match_versions(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _detail(self, product: Product, *, fields: tuple[str, ...] | None) -> CachedResponse:
        body = render(_product_detail_data(product, fields=fields))
        return CachedResponse(body=body, etag=etag_for(body, version=product.version))

    def _written(self, product: Product, code: int) -> Response:
        data = _product_detail_data(product, fields=None)
        headers = {"ETag": etag_for(render(data), version=product.version)}
        if code == status.HTTP_201_CREATED:
            headers["Location"] = reverse(
                "product-detail", kwargs={"pk": product.pk}, request=self.request
            )
        return Response(data, status=code, headers=headers)


def _product_detail_data(product: Product, *, fields: tuple[str, ...] | None) -> dict:
    """The detail body; `related` costs one query, and none when the fields leave it out."""
    wants_related = fields is None or "related" in fields
    product.related_items = selectors.product_related(product=product) if wants_related else []
    return s.one_row(s.ProductDetailSerializer, product, fields)


# --- categories --------------------------------------------------------------------------------


class CategoryViewSet(TenantViewSet):
    """Categories of the caller's tenant: a tree, through `parent`."""

    model = Category
    serializer_class = s.CategorySerializer
    required_permissions = READ_WRITE_PERMISSIONS

    def cached_read(self, request: HttpRequest) -> CachedRead | None:
        try:
            if self.action == "list":
                page_size = self.paginator.page_size_of(request.META.get("QUERY_STRING", ""))
                query = filters.category_list_query(request, page_size=page_size)
                return catalog_read(request, "category_list", query.cache_key(request))
            if self.action == "retrieve":
                fields = filters.category_detail_fields(request)
                return catalog_read(request, "category_detail", detail_key(self.kwargs, fields))
        except ValidationError:
            return None  # the view answers with the 400
        return None

    @extend_schema(
        parameters=CATEGORY_LIST_PARAMETERS,
        responses={200: s.CategorySerializer(many=True), **NOT_MODIFIED},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any):
        query = filters.paged(request, self.paginator, filters.category_list_query)

        def compute() -> CachedResponse:
            queryset = selectors.category_list(
                parent_id=query.filters.get("parent"), ordering=query.ordering
            )
            page = self.paginator.paginate_queryset(queryset, request, view=self)
            data = s.list_rows(s.CategorySerializer, page, query.fields)
            body = render(self.paginator.get_paginated_data(data))
            return CachedResponse(body=body, etag=etag_for(body))

        cached = cached_response(
            kind="category_list",
            key=query.cache_key(request),
            timeout=settings.CATALOG_LIST_CACHE_SECONDS,
            compute=compute,
            missed=cached_reads.missed(request),
        )
        return conditional_get(request, cached)

    @extend_schema(
        parameters=[FIELDS_PARAMETER, IF_NONE_MATCH],
        responses={200: s.CategorySerializer, **NOT_MODIFIED},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any):
        fields = filters.category_detail_fields(request)

        def compute() -> CachedResponse:
            category = self.get_object()
            body = render(s.one_row(s.CategorySerializer, category, fields))
            return CachedResponse(body=body, etag=etag_for(body, version=category.version))

        cached = cached_response(
            kind="category_detail",
            key=detail_key(self.kwargs, fields),
            timeout=settings.CATALOG_DETAIL_CACHE_SECONDS,
            compute=compute,
            missed=cached_reads.missed(request),
        )
        return conditional_get(request, cached)

    @extend_schema(
        parameters=[IDEMPOTENCY_KEY],
        request=s.CategoryInputSerializer,
        responses={201: s.CategorySerializer, **CREATE_PROBLEMS},
    )
    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = validated_input(self, s.CategoryInputSerializer)
        category = services.category_create(
            tenant=self.principal.tenant, actor=self.principal, data=data
        )
        return self._written(category, status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[IF_MATCH],
        request=s.CategoryInputSerializer,
        responses={200: s.CategorySerializer, **UPDATE_PROBLEMS},
    )
    def update(self, request: Request, *args: Any, partial: bool = False, **kwargs: Any):
        category = self.get_object()
        data = validated_input(self, s.CategoryInputSerializer, partial=partial)
        category = services.category_update(
            tenant=self.principal.tenant,
            actor=self.principal,
            category=category,
            data=data,
            expected_versions=if_match_versions(request),
        )
        return self._written(category, status.HTTP_200_OK)

    @extend_schema(
        parameters=[IF_MATCH],
        request=s.CategoryInputSerializer,
        responses={200: s.CategorySerializer, **UPDATE_PROBLEMS},
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(parameters=[IF_MATCH], responses={204: None, **DELETE_PROBLEMS})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.category_delete(
            tenant=self.principal.tenant,
            actor=self.principal,
            category=self.get_object(),
            expected_versions=if_match_versions(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _written(self, category: Category, code: int) -> Response:
        data = s.one_row(s.CategorySerializer, category)
        headers = {"ETag": etag_for(render(data), version=category.version)}
        if code == status.HTTP_201_CREATED:
            headers["Location"] = reverse(
                "category-detail", kwargs={"pk": category.pk}, request=self.request
            )
        return Response(data, status=code, headers=headers)
