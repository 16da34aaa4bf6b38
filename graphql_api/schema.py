"""The schema: every feature's queries and mutations, the kernel's limits, and the scalars
spelled as REST spells them (a time as DRF writes it, `…Z` in UTC; a price as a decimal string).

Introspection is off unless GRAPHQL_INTROSPECTION (on by default where DEBUG is): the SDL is
published at /graphql/schema.graphql for signed-in clients instead, and the committed copy
(graphql_api/schema.graphql) is checked against this module by the test suite.
"""

import datetime
from collections.abc import Iterator

import strawberry
from django.conf import settings
from graphql import ExecutionResult as GraphQLExecutionResult
from rest_framework.fields import DateTimeField
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from graphql_api import errors, limits
from graphql_api.accounts import AccountsQuery
from graphql_api.catalog import CatalogMutation, CatalogQuery
from graphql_api.notifications import NotificationsMutation, NotificationsQuery

_drf_datetime = DateTimeField()
DOCUMENTS_REMEMBERED = 1024

DateTime = strawberry.scalar(
    name="DateTime",
    description="A time in RFC 3339, as REST writes it: `2026-12-07T10:00:00.123456Z`.",
    serialize=_drf_datetime.to_representation,
    parse_value=lambda value: _drf_datetime.to_internal_value(value),
)


class KernelLimits(SchemaExtension):
    """The document, once valid, measured against graphql_api/limits.py's limits and charged to
    the rate limit by its cost; refused (nothing runs) when over a limit or over the rate."""

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        measured = limits.measure(
            execution.schema._schema,
            execution.graphql_document,
            execution.operation_name,
            execution.variables,
        )
        if measured is not None:
            error = limits.over_limits(measured) or limits.charge(execution.context, measured)
            if error is not None:
                execution.result = GraphQLExecutionResult(data=None, errors=[error])
        yield


class Schema(strawberry.Schema):
    def process_errors(self, errors_, execution_context=None) -> None:
        # Expected errors (NOT_FOUND, FORBIDDEN, …) are answers, not incidents: only bugs are
        # logged, with their traceback.
        errors.log_unexpected(errors_)


Query = merge_types("Query", (AccountsQuery, CatalogQuery, NotificationsQuery))
Mutation = merge_types("Mutation", (CatalogMutation, NotificationsMutation))


def build_schema(*, introspection: bool) -> Schema:
    # Parsing and validating a document is most of a small query's time: both are remembered
    # per distinct document (they depend on nothing else); the limits and the rate limit, which
    # depend on the variables and the caller, run on every request.
    extensions: list = [
        lambda: ParserCache(maxsize=DOCUMENTS_REMEMBERED),
        lambda: ValidationCache(maxsize=DOCUMENTS_REMEMBERED),
        KernelLimits,
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return Schema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(
            scalar_map={datetime.datetime: DateTime},
            # Without introspection, "did you mean …" would give the schema away field by field.
            disable_field_suggestions=not introspection,
        ),
    )


schema = build_schema(introspection=settings.GRAPHQL_INTROSPECTION)


def sdl() -> str:
    """The schema as SDL, as /graphql/schema.graphql serves it and the repository keeps it."""
    return schema.as_str() + "\n"
