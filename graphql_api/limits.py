"""What a GraphQL document may ask for, measured before any resolver runs.

One walk over the operation (fragments expanded, introspection fields left out: they read the
schema, not the database) measures:

- depth: fields nested in fields, the operation's own fields at 1 (GRAPHQL_MAX_DEPTH);
- cost: the objects the answer can hold, at most. An object field counts once for each object
  it can appear in; a connection's `edges` count `first` times (its default page size when not
  given), and a list of objects its longest length (`LIST_LENGTHS`) times; what is under them
  is multiplied alike. `products(first: 25) { edges { node { category { name } } } }` costs 1
  (the connection) + 25 (edges) + 25 (nodes) + 25 (categories) = 76. GRAPHQL_MAX_COST;
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
    DocumentNode,
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
    # Nothing bounds a member's roles, but a member holds one or two: five is generous, where the
    # default (a page) would make a page of members with their roles cost 25 times its size.
    ("Member", "roles"): 5,
}


@dataclass
class Measure:
    depth: int = 0
    cost: int = 0
    aliases: Counter = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)
    # What the operation is (query, mutation) and the fields it asks of the root: what the
    # response cache decides by (graphql_api/cache.py).
    operation: str = ""
    root_fields: set[str] = field(default_factory=set)


def tokens_for(cost: int) -> int:
    """The rate-limit tokens a document of `cost` takes: one, and one more per
    GRAPHQL_COST_PER_TOKEN objects beyond the first."""
    return 1 + max(cost - 1, 0) // max(settings.GRAPHQL_COST_PER_TOKEN, 1)


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> Measure | None:
    """The measure of the operation a request runs; None when there is no such operation (which
    graphql-core reports)."""
    operations = [
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    operation = _chosen(operations, operation_name)
    if operation is None:
        return None
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    walker = _Walker(schema, fragments, variables or {}, operation)
    result = walker.measure(operation.selection_set, schema.get_root_type(operation.operation))
    result.operation = operation.operation.value
    return result


def _chosen(
    operations: list[OperationDefinitionNode], name: str | None
) -> OperationDefinitionNode | None:
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


def over_limits(measure: Measure) -> GraphQLError | None:
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
        page_size: int = 1,
    ) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                self._field(selection, parent, depth, multiplier, seen, page_size)
                continue
            if isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                inner = selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue  # unknown or cyclic: graphql-core's rules report it
                target = self.schema.get_type(fragment.type_condition.name.value)
                inner = fragment.selection_set
                seen = seen | {name}
            else:
                continue
            self._walk(
                inner,
                target or parent,
                depth=depth,
                multiplier=multiplier,
                seen=seen,
                page_size=page_size,
            )

    def _field(
        self,
        node: FieldNode,
        parent: Any,
        depth: int,
        multiplier: int,
        seen: frozenset[str],
        page_size: int,
    ) -> None:
        name = node.name.value
        if name.startswith("__"):
            return  # introspection: the schema, not the database
        self.result.depth = max(self.result.depth, depth)
        if depth == 1:
            self.result.root_fields.add(name)
        parent_name = getattr(parent, "name", "?")
        if node.alias is not None:
            self.result.aliases[f"{parent_name}.{name}"] += 1
        definition = getattr(parent, "fields", {}).get(name)
        if definition is None or node.selection_set is None:
            return  # a scalar, or an unknown field (reported by graphql-core)
        named = get_named_type(definition.type)
        inner_page = 1
        if named.name.endswith(CONNECTION_SUFFIX):
            # The connection itself is one object; its `edges` are `first` of them.
            count = multiplier
            inner_page = self._page_size(node)
        elif parent_name.endswith(CONNECTION_SUFFIX) and name == "edges":
            count = multiplier * page_size
        elif _is_list(definition.type):
            length = LIST_LENGTHS.get((parent_name, name), DEFAULT_PAGE_SIZE)
            count = multiplier * (length() if callable(length) else length)
        else:
            count = multiplier
        self.result.cost += count
        self._walk(
            node.selection_set,
            named,
            depth=depth + 1,
            multiplier=count,
            seen=seen,
            page_size=inner_page,
        )

    def _page_size(self, node: FieldNode) -> int:
        argument = next((arg for arg in node.arguments or () if arg.name.value == "first"), None)
        if argument is None:
            return DEFAULT_PAGE_SIZE
        if isinstance(argument.value, VariableNode):
            value = self.variables.get(argument.value.name.value, DEFAULT_PAGE_SIZE)
        else:
            value = value_from_ast_untyped(argument.value)
        if isinstance(value, float) and value.is_integer():
            # JSON's 100.0 (or 1e2) is the Int 100 to graphql-core: measured as what runs.
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return DEFAULT_PAGE_SIZE  # a wrong type: graphql-core reports it
        if value > MAX_PAGE_SIZE:
            self.result.refusals.append(f"first {value} exceeds {MAX_PAGE_SIZE}")
        return max(min(value, MAX_PAGE_SIZE), 1)


def _is_list(graphql_type: Any) -> bool:
    while isinstance(graphql_type, GraphQLNonNull):
        graphql_type = graphql_type.of_type
    return isinstance(graphql_type, GraphQLList)


def charge(context: Any, measure: Measure) -> GraphQLError | None:
    """Take a measured document's tokens from the caller's buckets: None when they were there,
    the RATE_LIMITED error (and a 429 with Retry-After) when not."""
    context.measure = measure
    try:
        ratelimit.limit_api_request(context.request, cost=tokens_for(measure.cost))
    except Problem as problem:
        retry_after = problem.headers.get(RETRY_AFTER_HEADER)
        context.response.status_code = problem.status_code
        if problem.status_code == 429 and retry_after:
            context.response.headers[RETRY_AFTER_HEADER] = retry_after
        return errors.graphql_error(problem.problem_type, str(problem.detail))
    return None
