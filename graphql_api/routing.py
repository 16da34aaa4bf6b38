"""Where a GraphQL request reads: a query from a healthy replica, anything else from the primary.

The REST API can tell a read from a write by its method; GraphQL cannot (queries and mutations
are both POSTs), so the view decides from the operation the document runs, parsed as Strawberry
parses it: the same parser cache (the parse is done once per distinct document for both) and the
same choice of operation (graphql-core's `get_operation_ast`, which `operationName` selects by).
A query then reads where kernel/replicas.py says a read-only REST request would (a healthy
replica, unless the credential wrote a moment ago) and does not mark its credential as one that
wrote; a mutation, or a document that does not say which operation it runs, is the primary's,
and its credential is marked as a REST write's is. A replica that fails while a query runs is
reported by graphql_api/errors.py (`replica_failed`), and the view answers again from the primary.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from graphql import GraphQLError, OperationType, get_operation_ast
from strawberry.extensions import ParserCache

from graphql_api.schema import DOCUMENTS_REMEMBERED
from kernel import replicas

# Strawberry keeps one parser cache per size, shared by every instance: this is the schema's.
_parse = ParserCache(maxsize=DOCUMENTS_REMEMBERED).cached_parse_document


def operation_of(request: HttpRequest, body: Any) -> OperationType | None:
    """The type of the operation the request runs (`body`: its parsed JSON body, for a POST);
    None when it cannot be told (no document, one that does not parse, an operation name that
    selects none, a batch)."""
    if request.method == "GET":
        query, name = request.GET.get("query"), request.GET.get("operationName")
    elif isinstance(body, dict):
        query, name = body.get("query"), body.get("operationName")
    else:
        return None
    if not isinstance(query, str) or not isinstance(name, str | None):
        return None
    if len(query.encode()) > settings.GRAPHQL_MAX_DOCUMENT_BYTES:
        return None  # refused before it runs (graphql_api/view.py): never parsed
    try:
        document = _parse(query)
    except GraphQLError:
        return None
    operation = get_operation_ast(document, name)
    return operation.operation if operation is not None else None


def read_alias_for(request: HttpRequest, body: Any) -> str | None:
    """Where the request's reads go: a healthy replica for a query (which is declared to write
    nothing), None (the primary) for anything else."""
    if not replicas.replica_aliases() or operation_of(request, body) is not OperationType.QUERY:
        return None
    replicas.reads_only(request)
    return replicas.replica_for(request)
