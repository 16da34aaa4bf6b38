"""What a GraphQL document may ask for, measured before any resolver runs.

One walk over the operation (fragments expanded, introspection fields left out: they read the
schema, not the database) measures:

- depth: fields nested in fields, the operation's own fields at 1 (GRAPHQL_MAX_DEPTH);
- cost: the objects the answer can hold, at most. Each field of an object type counts once per
  object it can appear in: a connection's `first` (its default page size when not given)
  multiplies what is under it, and so does a list field by its longest length
  (`LIST_LENGTHS`). GRAPHQL_MAX_COST;
- aliases: how often one field is asked for under another name (GRAPHQL_MAX_ALIASES);
- `first`: at most MAX_PAGE_SIZE, as REST's `page_size`.

A document over a limit is refused whole with QUERY_TOO_COMPLEX, saying which limit and by how
much. One within them takes `tokens_for(cost)` tokens from the caller's rate-limit buckets, the
same buckets as REST (docs/rate-limits.md), before it runs.
"""

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)

from graphql_api import errors
from graphql_api.errors import QUERY_TOO_COMPLEX, graphql_error
from kernel import ratelimit
from kernel.problems import Problem, ProblemType
from kernel.ratelimit import RETRY_AFTER_HEADER

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
CONNECTION_SUFFIX = "Connection"


def _related_limit() -> int:
    return settings.CATALOG_RELATED_LIMIT


# The longest a list field of objects can be, where it is not a connection with `first`:
# (type, field) -> length, or a function of the settings.
LIST_LENGTHS: dict[tuple[str, str], int | Callable[[], int]] = {
    ("Product", "related"): _related_limit,
}


@dataclass
class Measure:
    depth: int = 0
    cost: int = 0
    aliases: Counter = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)


def tokens_for(cost: int) -> int:
    """The rate-limit tokens a document of `cost` takes: one, and one more per
    GRAPHQL_COST_PER_TOKEN objects beyond the first."""
    return 1 + max(cost - 1, 0) // max(settings.GRAPHQL_COST_PER_TOKEN, 1)


def limits_rule(
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
    on_measured: Callable[[Measure], GraphQLError | None],
) -> type[ValidationRule]:
    """A validation rule that measures the operation to run and refuses it if it is over a
    limit; within them, `on_measured` (the rate limit) may still refuse it."""

    class QueryLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.done = False

        def enter_document(self, node, *_args) -> None:
            if self.done:
                return
            self.done = True
            document = node
            operations = [
                definition
                for definition in document.definitions
                if isinstance(definition, OperationDefinitionNode)
            ]
            operation = _chosen(operations, operation_name)
            if operation is None:
                return  # graphql-core's own rules and the executor say what is wrong
            fragments = {
                definition.name.value: definition
                for definition in document.definitions
                if isinstance(definition, FragmentDefinitionNode)
            }
            walker = _Walker(self.context.schema, fragments, variables or {}, operation)
            root = self.context.schema.get_root_type(operation.operation)
            measure = walker.measure(operation.selection_set, root)
            error = _over_limits(measure)
            if error is None:
                error = on_measured(measure)
            if error is not None:
                self.report_error(error)

    return QueryLimits


def _chosen(
    operations: list[OperationDefinitionNode], name: str | None
) -> OperationDefinitionNode | None:
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


def _over_limits(measure: Measure) -> GraphQLError | None:
    reasons = list(measure.refusals)
    if measure.depth > settings.GRAPHQL_MAX_DEPTH:
        reasons.append(f"depth {measure.depth} exceeds {settings.GRAPHQL_MAX_DEPTH}")
    if measure.cost > settings.GRAPHQL_MAX_COST:
        reasons.append(f"cost {measure.cost} exceeds {settings.GRAPHQL_MAX_COST}")
    for name, count in sorted(measure.aliases.items()):
        if count > settings.GRAPHQL_MAX_ALIASES:
            reasons.append(f"{count} aliases of {name} exceed {settings.GRAPHQL_MAX_ALIASES}")
    if not reasons:
        return None
    return graphql_error(
        ProblemType.VALIDATION_ERROR,
        f"The query is too complex: {'; '.join(reasons)}.",
        code=QUERY_TOO_COMPLEX,
        extensions={"depth": measure.depth, "cost": measure.cost},
    )


class _Walker:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        operation: OperationDefinitionNode,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = dict(variables)
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and definition.default_value is not None:
                self.variables[name] = value_from_ast_untyped(definition.default_value)
        self.result = Measure()

    def measure(self, selection_set: SelectionSetNode, root: GraphQLObjectType | None) -> Measure:
        if root is not None:
            self._walk(selection_set, root, depth=1, multiplier=1, seen=frozenset())
        return self.result

    def _walk(
        self,
        selection_set: SelectionSetNode,
        parent: Any,
        *,
        depth: int,
        multiplier: int,
        seen: frozenset[str],
    ) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                self._field(selection, parent, depth, multiplier, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                self._walk(
                    selection.selection_set,
                    target or parent,
                    depth=depth,
                    multiplier=multiplier,
                    seen=seen,
                )
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue  # unknown or cyclic: graphql-core's rules report it
                target = self.schema.get_type(fragment.type_condition.name.value)
                self._walk(
                    fragment.selection_set,
                    target or parent,
                    depth=depth,
                    multiplier=multiplier,
                    seen=seen | {name},
                )

    def _field(
        self, node: FieldNode, parent: Any, depth: int, multiplier: int, seen: frozenset[str]
    ) -> None:
        name = node.name.value
        if name.startswith("__"):
            return  # introspection: the schema, not the database
        self.result.depth = max(self.result.depth, depth)
        if node.alias is not None:
            self.result.aliases[f"{getattr(parent, 'name', '?')}.{name}"] += 1
        definition = getattr(parent, "fields", {}).get(name)
        if definition is None or node.selection_set is None:
            return  # a scalar, or an unknown field (reported by graphql-core)
        named = get_named_type(definition.type)
        self.result.cost += multiplier
        inner = multiplier
        if named.name.endswith(CONNECTION_SUFFIX):
            inner *= self._page_size(node)
        elif _is_list(definition.type):
            length = LIST_LENGTHS.get((parent.name, name), DEFAULT_PAGE_SIZE)
            inner *= length() if callable(length) else length
        self._walk(node.selection_set, named, depth=depth + 1, multiplier=inner, seen=seen)

    def _page_size(self, node: FieldNode) -> int:
        argument = next((arg for arg in node.arguments or () if arg.name.value == "first"), None)
        if argument is None:
            return DEFAULT_PAGE_SIZE
        if isinstance(argument.value, VariableNode):
            value = self.variables.get(argument.value.name.value, DEFAULT_PAGE_SIZE)
        else:
            value = value_from_ast_untyped(argument.value)
        if not isinstance(value, int) or isinstance(value, bool):
            return DEFAULT_PAGE_SIZE  # a wrong type: graphql-core reports it
        if value > MAX_PAGE_SIZE:
            self.result.refusals.append(f"first {value} exceeds {MAX_PAGE_SIZE}")
        return max(min(value, MAX_PAGE_SIZE), 1)


def _is_list(graphql_type: Any) -> bool:
    while isinstance(graphql_type, GraphQLNonNull):
        graphql_type = graphql_type.of_type
    return isinstance(graphql_type, GraphQLList)


def charge(context: Any, cost: int) -> GraphQLError | None:
    """Take a measured document's tokens from the caller's buckets: None when they were there,
    the RATE_LIMITED error (and a 429 with Retry-After) when not."""
    try:
        ratelimit.limit_api_request(context.request, cost=tokens_for(cost))
    except Problem as problem:
        retry_after = problem.headers.get(RETRY_AFTER_HEADER)
        context.response.status_code = problem.status_code
        if problem.status_code == 429 and retry_after:
            context.response.headers[RETRY_AFTER_HEADER] = retry_after
        return errors.graphql_error(problem.problem_type, str(problem.detail))
    return None
