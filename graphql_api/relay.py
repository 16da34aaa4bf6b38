"""Relay connections (`edges { node cursor }`, `pageInfo`, `totalCount`) over REST's keyset
pagination (kernel/pagination.py): the same ordering, the same cursors (a REST `next` cursor is a
valid `after`), the same page size limits, and a page costs one query wherever it starts."""

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry
from django.db.models import Model, QuerySet
from rest_framework.exceptions import ValidationError

from graphql_api.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from kernel.pagination import Keyset

NodeType = TypeVar("NodeType")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeType]):
    node: NodeType
    keyset: strawberry.Private[Keyset]

    @strawberry.field(description="Where this node is: pass it as `after` to read on from it.")
    def cursor(self) -> str:
        # Made when asked for only: a cursor is a small JSON document, encoded, for every edge.
        return self.keyset.cursor(self.node)


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo
    queryset: strawberry.Private[QuerySet]

    @strawberry.field(description="Every node the filters select: one more query, when asked.")
    def total_count(self) -> int:
        return self.queryset.count()


def connection(
    queryset: QuerySet,
    *,
    first: int,
    after: str | None,
    prepare: Callable[[list[Model]], Any] | None = None,
) -> Connection:
    """The page of `queryset` (ordered as the list's REST endpoint orders it) after `after`.
    `prepare` sees the page's rows before they are returned (to load what they refer to, for
    the whole page at once)."""
    if first < 1:
        raise ValidationError({"first": ["Must be a positive integer."]})
    keyset = Keyset.of(queryset, param="after")
    rows = keyset.page(queryset, size=min(first, MAX_PAGE_SIZE), cursor=after)
    if prepare is not None and rows:
        prepare(rows)
    edges = [Edge(node=row, keyset=keyset) for row in rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=keyset.has_next,
            has_previous_page=keyset.has_previous,
            start_cursor=_edge_cursor(edges, 0),
            end_cursor=_edge_cursor(edges, -1),
        ),
        queryset=queryset,
    )


def _edge_cursor(edges: Sequence[Edge], index: int) -> str | None:
    return edges[index].keyset.cursor(edges[index].node) if edges else None


__all__ = ["DEFAULT_PAGE_SIZE", "Connection", "Edge", "PageInfo", "connection"]
