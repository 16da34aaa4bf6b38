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
from graphql import GraphQLError
from rest_framework.fields import DateTimeField
from strawberry.extensions import SchemaExtension
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from graphql_api import errors, limits
from graphql_api.catalog import CatalogMutation, CatalogQuery
from graphql_api.limits import Measure, limits_rule

_drf_datetime = DateTimeField()

DateTime = strawberry.scalar(
    name="DateTime",
    description="A time in RFC 3339, as REST writes it: `2026-12-07T10:00:00.123456Z`.",
    serialize=_drf_datetime.to_representation,
    parse_value=lambda value: _drf_datetime.to_internal_value(value),
)


class KernelLimits(SchemaExtension):
    """graphql_api/limits.py's rule, made for this request's variables, then its rate limit."""

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        context = execution.context

        def charge(measure: Measure) -> GraphQLError | None:
            return limits.charge(context, measure.cost)

        rule = limits_rule(execution.variables, execution.operation_name, charge)
        execution.validation_rules = (*execution.validation_rules, rule)
        yield


class Schema(strawberry.Schema):
    def process_errors(self, errors_, execution_context=None) -> None:
        # Expected errors (NOT_FOUND, FORBIDDEN, …) are answers, not incidents: only bugs are
        # logged, with their traceback.
        errors.log_unexpected(errors_)


Query = merge_types("Query", (CatalogQuery,))
Mutation = merge_types("Mutation", (CatalogMutation,))


def build_schema(*, introspection: bool) -> Schema:
    extensions: list = [KernelLimits]
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
