"""The query parameters of the catalog lists: parsed, validated and normalized, without SQL.

Parsing touches no database, so that a cached list is answered without a query, and a bad value
is a 400 problem naming the parameter. The normalized form is also the cache key: two query
strings that mean the same (`in_stock=1` and `in_stock=true`, parameters in another order,
unknown ones) share one entry.
"""

import datetime
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict
from rest_framework.exceptions import ErrorDetail, ValidationError

from catalog import validators as v
from catalog.api.serializers import CATEGORY_FIELDS, PRODUCT_DETAIL_FIELDS, PRODUCT_FIELDS
from catalog.models import Category, Product
from catalog.selectors import (
    CATEGORY_ORDERINGS,
    DEFAULT_CATEGORY_ORDERING,
    DEFAULT_PRODUCT_ORDERING,
    PRODUCT_ORDERINGS,
    ProductFilters,
)

TRUE_VALUES = ("true", "1")
FALSE_VALUES = ("false", "0")
MAX_SEARCH_LENGTH = 200


class StrictBooleanFilter(django_filters.Filter):
    """`true`/`false` (or 1/0); anything else is an error, not silently "no filter"."""

    field_class = forms.TypedChoiceField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("choices", [(value, value) for value in (*TRUE_VALUES, *FALSE_VALUES)])
        kwargs.setdefault("coerce", lambda value: value in TRUE_VALUES)
        kwargs.setdefault("empty_value", None)
        super().__init__(*args, **kwargs)


class ProductFilterSet(django_filters.FilterSet):
    """Used for its form: the validation of the filters. The selector applies them."""

    # GraphQL hands these over from JSON, which can hold a lone surrogate (a query string
    # cannot): refused here, not by PostgreSQL as a 500.
    search = django_filters.CharFilter(
        max_length=MAX_SEARCH_LENGTH, validators=[v.validate_storable_text]
    )
    category = django_filters.UUIDFilter()
    price_min = django_filters.NumberFilter(
        min_value=0, max_digits=v.PRICE_MAX_DIGITS, decimal_places=v.PRICE_DECIMAL_PLACES
    )
    price_max = django_filters.NumberFilter(
        min_value=0, max_digits=v.PRICE_MAX_DIGITS, decimal_places=v.PRICE_DECIMAL_PLACES
    )
    in_stock = StrictBooleanFilter()
    is_active = StrictBooleanFilter()
    tag = django_filters.CharFilter(
        max_length=v.TAG_MAX_LENGTH, validators=[v.validate_storable_text]
    )
    updated_since = django_filters.IsoDateTimeFilter()

    class Meta:
        model = Product
        fields: list[str] = []


class CategoryFilterSet(django_filters.FilterSet):
    parent = django_filters.UUIDFilter()

    class Meta:
        model = Category
        fields: list[str] = []


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list request's meaning: filters, ordering, sparse fields, page size and cursor.

    Shared by every request with the same query string (it is memoised): read it, never change
    it (`filters` is a read-only mapping).
    """

    filters: Mapping[str, Any]
    ordering: str
    fields: tuple[str, ...] | None
    page_size: int
    cursor: str
    # What the query string puts in the cache key, made once per (memoised) query.
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [self.ordering, str(self.page_size)]
        parts.append(",".join(self.fields) if self.fields is not None else "*")
        parts.append(self.cursor)
        parts.extend(f"{name}={value}" for name, value in sorted(self.filters.items()))
        object.__setattr__(self, "_key", "\n".join(parts))

    def cache_key(self, request: HttpRequest) -> str:
        # Links in the body (next, previous) are absolute: the host and scheme are part of it.
        return f"{request.build_absolute_uri(request.path)}\n{self._key}"


# Distinct list queries remembered, per process and per list. Parsing is a function of the query
# string alone, and it is a third of a cached hit's cost: a shop's clients repeat few queries.
# Bounded, so that a client sending endless new ones only evicts older entries; invalid queries
# raise and are never remembered.
QUERY_MEMORY_SIZE = 4096


def product_list_query(request: HttpRequest, *, page_size: int) -> tuple[ListQuery, ProductFilters]:
    """The product list's query, validated and normalized; a 400 (ValidationError) if invalid."""
    return _product_list_query(request.META.get("QUERY_STRING", ""), page_size)


@functools.lru_cache(maxsize=QUERY_MEMORY_SIZE)
def _product_list_query(query_string: str, page_size: int) -> tuple[ListQuery, ProductFilters]:
    params = QueryDict(query_string)
    errors: dict[str, list] = {}
    filters = _product_filters(params, errors)
    ordering = _collected(
        errors, lambda: ordering_param(params, PRODUCT_ORDERINGS, DEFAULT_PRODUCT_ORDERING)
    )
    fields = _collected(errors, lambda: fields_param(params, PRODUCT_FIELDS))
    if errors:
        raise ValidationError(errors)
    query = ListQuery(
        filters=MappingProxyType(filters),
        ordering=ordering,
        fields=fields,
        page_size=page_size,
        cursor=params.get("cursor", ""),
    )
    return query, ProductFilters(**query.filters)


def product_filters(params: QueryDict) -> ProductFilters:
    """The product list's filters in `params`, as REST's query string names them: GraphQL's
    `products(filter:)` is validated here too, so that both surfaces mean the same by each
    filter and refuse the same values. A ValidationError naming each wrong one."""
    errors: dict[str, list] = {}
    filters = _product_filters(params, errors)
    if errors:
        raise ValidationError(errors)
    return ProductFilters(**filters)


def _product_filters(params: QueryDict, errors: dict[str, list]) -> dict[str, Any]:
    """The filters given in `params`, validated and normalized; what is wrong goes to `errors`."""
    filters = _collected(errors, lambda: _validated(ProductFilterSet, params)) or {}
    if filters.get("updated_since") is not None:
        filters["updated_since"] = _collected(
            errors, lambda: _in_utc(filters["updated_since"], "updated_since")
        )
    if (
        filters.get("price_min") is not None
        and filters.get("price_max") is not None
        and filters["price_min"] > filters["price_max"]
    ):
        errors["price_max"] = ["Must not be below price_min."]
    if filters.get("search") is not None and not filters["search"].strip():
        filters["search"] = None
    return {name: value for name, value in filters.items() if value not in (None, "")}


def category_list_query(request: HttpRequest, *, page_size: int) -> ListQuery:
    """The category list's query, validated and normalized; a 400 (ValidationError) if invalid."""
    return _category_list_query(request.META.get("QUERY_STRING", ""), page_size)


@functools.lru_cache(maxsize=QUERY_MEMORY_SIZE)
def _category_list_query(query_string: str, page_size: int) -> ListQuery:
    params = QueryDict(query_string)
    errors: dict[str, list] = {}
    filters = _collected(errors, lambda: _validated(CategoryFilterSet, params)) or {}
    ordering = _collected(
        errors, lambda: ordering_param(params, CATEGORY_ORDERINGS, DEFAULT_CATEGORY_ORDERING)
    )
    fields = _collected(errors, lambda: fields_param(params, CATEGORY_FIELDS))
    if errors:
        raise ValidationError(errors)
    return ListQuery(
        filters=MappingProxyType(
            {name: value for name, value in filters.items() if value is not None}
        ),
        ordering=ordering,
        fields=fields,
        page_size=page_size,
        cursor=params.get("cursor", ""),
    )


def paged(request: HttpRequest, paginator: Any, list_query: Callable[..., Any]) -> Any:
    """`list_query(request, page_size=…)` with the page size the paginator reads, or one 400
    naming every parameter that is wrong, the page size among them."""
    errors: dict[str, list] = {}
    page_size = _collected(errors, lambda: paginator.get_page_size(request))
    found = _collected(
        errors, lambda: list_query(request, page_size=page_size or paginator.page_size)
    )
    if errors:
        raise ValidationError(errors)
    return found


def _collected(errors: dict[str, list], step: Callable[[], Any]) -> Any:
    """What `step` returns, or None with its field errors added to `errors`: every parameter of
    a list is checked, and the 400 names every one that is wrong at once."""
    try:
        return step()
    except ValidationError as exc:
        for name, messages in exc.detail.items():
            errors.setdefault(name, []).extend(messages)
        return None


def ordering_param(params: QueryDict, allowed: Sequence[str], default: str) -> str:
    raw = params.get("ordering", "").strip()
    if not raw:
        return default
    if raw.lstrip("-") not in allowed or raw.count("-") > 1:
        raise ValidationError(
            {"ordering": [f"Order by one of: {', '.join(allowed)} (prefix - for descending)."]}
        )
    return raw


def fields_param(params: QueryDict, available: Sequence[str]) -> tuple[str, ...] | None:
    """`?fields=id,name`: the fields wanted, in the resource's own order; None for all."""
    raw = params.get("fields")
    if raw is None or not raw.strip():
        return None
    wanted = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = sorted(wanted - set(available))
    if unknown:
        raise ValidationError(
            {
                "fields": [
                    f"Unknown field(s): {', '.join(unknown)}. Available: {', '.join(available)}."
                ]
            }
        )
    return tuple(name for name in available if name in wanted)


def product_detail_fields(request: HttpRequest) -> tuple[str, ...] | None:
    return fields_param(request.GET, PRODUCT_DETAIL_FIELDS)


def category_detail_fields(request: HttpRequest) -> tuple[str, ...] | None:
    return fields_param(request.GET, CATEGORY_FIELDS)


def model_fields_for(fields: Iterable[str] | None, *, ordering: str) -> list[str] | None:
    """The columns a sparse product list needs: those asked for, the ordering's and the key."""
    if fields is None:
        return None
    columns = {"category_id" if name == "category" else name for name in fields}
    columns |= {"id", ordering.lstrip("-")}
    return sorted(columns)


def _in_utc(value: datetime.datetime, name: str) -> datetime.datetime:
    """The time in UTC. PostgreSQL takes UTC offsets up to 15:59 only, while ISO 8601 (and
    Python) allow up to 23:59: sent as given, `+19:00` would be a database error."""
    try:
        return value.astimezone(datetime.UTC)
    except OverflowError as exc:
        raise ValidationError({name: [ErrorDetail("Out of range.", code="invalid")]}) from exc


def _validated(filterset_class: type[django_filters.FilterSet], params: QueryDict) -> dict:
    # A parameter given with no value is an error, as any other value that is not one: "no
    # filter" is leaving the parameter out.
    blank = {
        name: [ErrorDetail("This parameter may not be empty.", code="blank")]
        for name in filterset_class.base_filters
        if params.get(name) == ""
    }
    form = _form_class(filterset_class)(params)
    if not form.is_valid() or blank:
        raise ValidationError(
            {
                **{
                    name: [
                        ErrorDetail(message, code=error.code or "invalid")
                        for error in errors
                        for message in error.messages
                    ]
                    for name, errors in form.errors.as_data().items()
                },
                **blank,
            }
        )
    return dict(form.cleaned_data)


@functools.cache
def _form_class(filterset_class: type[django_filters.FilterSet]) -> type[forms.Form]:
    """The FilterSet's form class, made once: only the form is used, and the FilterSet would make
    it anew for every query (deep copies of every filter and of its form field), which was a
    tenth of an uncached list's time. A form copies its fields on every instance, so sharing the
    class shares nothing mutable. An empty queryset given up front: the FilterSet would otherwise
    ask the model's manager for one, which needs a tenant, and parsing comes before
    authentication."""
    nothing = QuerySet(model=filterset_class._meta.model).none()
    return filterset_class(queryset=nothing).get_form_class()
