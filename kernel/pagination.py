"""Cursor pagination for every list of the API: `{"results": [...], "next", "previous"}`.

A keyset ("seek") paginator: the cursor holds the ordering values of the row at the edge of the
page, and the next page is the rows strictly after it, `WHERE (f, id) > (v, i)` in effect. Unlike
offsets, a page costs the same at row 10 and at row 1,000,000 (an index on `(tenant, f, id)`
serves it), and rows inserted or deleted meanwhile never make a walk repeat or skip a row.

- The ordering is the queryset's `order_by()` when it has one (a view orders its queryset by the
  client's `?ordering=`), else the paginator's `ordering`, else the model's `Meta.ordering`. The
  primary key is appended as a tie-breaker, so that rows with equal values keep a total order.
  Ordering fields must be concrete, non-null model fields.
- `?page_size=` defaults to 25; above 100 it is clamped to 100 (the conventions say so), while
  anything that is not a positive integer is a 400.
- The cursor is opaque to clients: base64url of a small JSON document with the edge values, the
  ordering it was made for and the direction. A cursor that does not decode, or was made for
  another ordering, is a 400 validation problem on `cursor`; never a 500.
"""

import base64
import binascii
import datetime
import decimal
import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, Q, QuerySet
from django.http import QueryDict
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

# Cursors we make are far shorter; anything longer is not one of ours.
MAX_CURSOR_LENGTH = 1024
INVALID_CURSOR = "Invalid cursor: use the `next` or `previous` link of a list response."


@dataclass
class Keyset:
    """The ordering of a queryset as a keyset (each field and whether it descends, the primary
    key last), the cursors made for it, and a page read after one. REST's `CursorPagination`
    and GraphQL's connections both page through it, so that a cursor means the same on both."""

    keys: list[tuple[str, bool]]
    fields: list[Field]
    # The name the cursor goes by where it is refused (`cursor` in REST, `after` in GraphQL).
    param: str = "cursor"
    has_next: bool = False
    has_previous: bool = False

    @classmethod
    def of(
        cls,
        queryset: QuerySet,
        *,
        default_ordering: str | Sequence[str] | None = None,
        param: str = "cursor",
    ) -> "Keyset":
        keys = _ordering_keys(queryset, default_ordering)
        return cls(keys, [_concrete_field(queryset.model, name) for name, _ in keys], param)

    def page(self, queryset: QuerySet, *, size: int, cursor: str | None) -> list[Model]:
        """Up to `size` rows after (or, for a `previous` cursor, before) `cursor`, in order;
        `has_next` and `has_previous` say what lies beyond them. One query."""
        position = self.decode(cursor)
        reverse = bool(position and position["reverse"])
        order_by = [("-" if descending != reverse else "") + name for name, descending in self.keys]
        queryset = queryset.order_by(*order_by)
        if position is not None:
            queryset = queryset.filter(self._beyond(position["values"], reverse=reverse))
        rows = list(queryset[: size + 1])
        has_more = len(rows) > size
        rows = rows[:size]
        if reverse:
            rows.reverse()
            self.has_previous, self.has_next = has_more, bool(rows)
        else:
            self.has_next, self.has_previous = has_more, position is not None and bool(rows)
        return rows

    def cursor(self, row: Model, *, reverse: bool = False) -> str:
        """The opaque cursor of the position at `row`: the rows after it, or before it."""
        # A model instance, or a row of `.values()` (a list that skips building models).
        if isinstance(row, Mapping):
            values = [_encode_value(row[field.attname]) for field in self.fields]
        else:
            values = [_encode_value(field.value_from_object(row)) for field in self.fields]
        payload = {"o": self.signature(), "v": values, "r": int(reverse)}
        token = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return token.decode().rstrip("=")

    def decode(self, raw: str | None) -> dict[str, Any] | None:
        if raw is None or raw == "":
            return None
        try:
            if len(raw) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            values, reverse = payload["v"], payload["r"]
            if payload["o"] != self.signature() or reverse not in (0, 1):
                raise ValueError("made for another ordering")
            if not isinstance(values, list) or len(values) != len(self.fields):
                raise ValueError("wrong shape")
            parsed = [
                field.to_python(value) for field, value in zip(self.fields, values, strict=True)
            ]
            if any(value is None for value in parsed):
                raise ValueError("null position")
        except (
            ValueError,
            TypeError,
            KeyError,
            binascii.Error,
            DjangoValidationError,
            decimal.InvalidOperation,
        ) as exc:
            raise ValidationError({self.param: [INVALID_CURSOR]}) from exc
        return {"values": parsed, "reverse": bool(reverse)}

    def signature(self) -> str:
        return ",".join(("-" if descending else "") + name for name, descending in self.keys)

    def _beyond(self, values: list[Any], *, reverse: bool) -> Q:
        """Rows strictly after the position in the direction of travel.

        (f1, f2, id) beyond (v1, v2, i): f1 past v1, or f1 = v1 and f2 past v2, or ... The leading
        `f1 >= v1` (or <=) adds nothing logically; it gives the planner a range on the first
        index column to start from, instead of an OR it cannot use an index for.
        """
        clauses = Q()
        equal_so_far = Q()
        for (name, descending), value in zip(self.keys, values, strict=True):
            lookup = "lt" if descending != reverse else "gt"
            clauses |= equal_so_far & Q(**{f"{name}__{lookup}": value})
            equal_so_far &= Q(**{name: value})
        first_name, first_descending = self.keys[0]
        bound = "lte" if first_descending != reverse else "gte"
        return Q(**{f"{first_name}__{bound}": values[0]}) & clauses


class CursorPagination(BasePagination):
    page_size = 25
    max_page_size = 100
    page_size_query_param = "page_size"
    cursor_query_param = "cursor"
    # Used when the queryset is not ordered and the model names no Meta.ordering.
    ordering: str | Sequence[str] | None = None

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list[Model]:
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size_value = self.get_page_size(request)
        self.keyset = Keyset.of(
            queryset, default_ordering=self.ordering, param=self.cursor_query_param
        )
        self.page = self.keyset.page(
            queryset,
            size=self.page_size_value,
            cursor=request.query_params.get(self.cursor_query_param),
        )
        return self.page

    def get_paginated_data(self, data: list) -> dict[str, Any]:
        return {
            "results": data,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
        }

    def get_paginated_response(self, data: list) -> Response:
        return Response(self.get_paginated_data(data))

    # --- links -----------------------------------------------------------------------------------

    def get_next_link(self) -> str | None:
        if not self.keyset.has_next:
            return None
        return self._link(self.page[-1], reverse=False)

    def get_previous_link(self) -> str | None:
        if not self.keyset.has_previous:
            return None
        return self._link(self.page[0], reverse=True)

    def _link(self, row: Model, *, reverse: bool) -> str:
        token = self.keyset.cursor(row, reverse=reverse)
        return _replace_query_param(self.base_url, self.cursor_query_param, token)

    # --- parsing ---------------------------------------------------------------------------------

    def get_page_size(self, request: Request) -> int:
        return self.page_size_from(request.query_params)

    def page_size_from(self, params: QueryDict) -> int:
        """The page size a query string asks for (clamped), or a 400 ValidationError."""
        return _page_size(
            params.get(self.page_size_query_param),
            self.page_size_query_param,
            self.page_size,
            self.max_page_size,
        )

    def page_size_of(self, query_string: str) -> int:
        """`page_size_from` the raw query string: a cached read names its entry before Django
        parses the query string, and the same few strings come back (remembered per process)."""
        return _page_size_of(
            query_string, self.page_size_query_param, self.page_size, self.max_page_size
        )

    # --- OpenAPI ---------------------------------------------------------------------------------

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The page to read: take it from a `next` or `previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": (
                    f"Results per page: default {self.page_size}, at most {self.max_page_size} "
                    "(larger values are clamped)."
                ),
                "schema": {"type": "integer", "minimum": 1},
            },
        ]

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": ["string", "null"], "format": "uri"}
        return {
            "type": "object",
            "required": ["results", "next", "previous"],
            "properties": {"results": schema, "next": link, "previous": link},
        }


def _ordering_keys(
    queryset: QuerySet, default_ordering: str | Sequence[str] | None
) -> list[tuple[str, bool]]:
    """[(field name, descending)], ending with the primary key."""
    ordering = list(queryset.query.order_by) or _as_list(default_ordering)
    if not ordering:
        ordering = list(queryset.model._meta.ordering) or ["-pk"]
    keys: list[tuple[str, bool]] = []
    for term in ordering:
        if not isinstance(term, str) or term == "?" or "__" in term:
            raise ImproperlyConfigured(
                f"Cursor pagination orders by plain field names, not {term!r}."
            )
        name = term.lstrip("-")
        name = queryset.model._meta.pk.name if name == "pk" else name
        keys.append((name, term.startswith("-")))
    pk_name = queryset.model._meta.pk.name
    if pk_name not in {name for name, _ in keys}:
        keys.append((pk_name, keys[0][1] if keys else False))
    return keys


def _as_list(ordering: str | Sequence[str] | None) -> list[str]:
    if ordering is None:
        return []
    return [ordering] if isinstance(ordering, str) else list(ordering)


def _concrete_field(model: type[Model], name: str) -> Field:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist as exc:
        raise ImproperlyConfigured(f"Cannot paginate {model.__name__} by {name!r}.") from exc
    if not field.concrete or field.many_to_many or field.null:
        raise ImproperlyConfigured(
            f"Cursor pagination needs a concrete, non-null field; {model.__name__}.{name} is not."
        )
    return field


def _encode_value(value: Any) -> Any:
    # Full precision: DjangoJSONEncoder would cut datetimes to milliseconds, and two rows within
    # the same millisecond would then be skipped or repeated.
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def _replace_query_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _page_size(raw: str | None, param: str, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValidationError({param: ["Must be a positive integer."]}, code="invalid")
    return min(size, maximum)


# Invalid strings raise and are not remembered.
@functools.lru_cache(maxsize=4096)
def _page_size_of(query_string: str, param: str, default: int, maximum: int) -> int:
    return _page_size(QueryDict(query_string).get(param), param, default, maximum)
