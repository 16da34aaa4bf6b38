"""The GraphQL endpoint: strawberry's Django view, with the kernel in front of it.

Before any GraphQL runs, the credential is checked by the kernel as REST checks it (any
registered type: a person's access token, an API key, a third-party app's OAuth token): none or a
bad one is a 401 problem+json, a suspended tenant a 403. The request then acts in the
credential's tenant, in one transaction, as a REST request does. The rate limit is taken once the
document is measured (graphql_api/limits.py), by its cost; a document that never got that far
(it does not parse) still takes one token.

A query reads from a healthy replica, as a REST GET does (graphql_api/routing.py decides from
the document), and is answered again from the primary if the replica fails under it; a mutation
reads and writes the primary, and marks its credential as a REST write does (kernel/replicas.py).

Errors keep GraphQL's shape (`errors[]` with `extensions`), with the HTTP status a client of
GraphQL over HTTP expects: 200 when GraphQL answered, 429 (with Retry-After) when the rate limit
refused, 400 for a request that is no GraphQL request at all (a problem+json).
"""

from collections.abc import Callable
from typing import Any

from cross_web import HTTPException
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.loader import render_to_string
from django.views.decorators.http import require_safe
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header
from strawberry.django.views import GraphQLView as StrawberryView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from graphql_api import cache as graphql_cache
from graphql_api import errors, routing
from graphql_api.context import Context
from kernel import access, credentials, ratelimit, replicas
from kernel.api import cached_reads
from kernel.middleware import OWN_ERROR_FORMAT
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType, problem_for_exception, problem_response
from kernel.ratelimit import decision_of


class GraphQLView(StrawberryView):
    allow_queries_via_get = True

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in ("GET", "POST"):
            return problem_response(
                request,
                ProblemType.METHOD_NOT_ALLOWED,
                detail=f'Method "{request.method}" is not allowed here: use GET or POST.',
                headers={"Allow": "GET, POST"},
            )
        if settings.DEBUG and self.should_render_graphql_ide(self.request_adapter_class(request)):
            # GraphiQL, served with everything it loads (graphql_api/static/): a page in a
            # browser, before any credential; its requests carry the one typed in its editor.
            return HttpResponse(render_to_string("graphql_api/graphiql.html", request=request))
        self.body = graphql_cache.json_body(request)
        key = graphql_cache.document_key(request, self.body)
        read = graphql_cache.cached_read(request, key)
        if read is not None:
            response = cached_reads.answer(request, read, permission=Perm.CATALOG_READ)
            if response is not None:
                setattr(response, OWN_ERROR_FORMAT, True)
                return response
        try:
            principal = authenticate(request)
        except (Problem, exceptions.APIException) as refused:
            # A refused credential still costs its address a token, as on REST.
            return _charged(request, problem_for_exception(request, refused), anonymous=True)
        self.principal = principal
        version = graphql_cache.version_before(request, key, cached_reads.missed(request))
        alias = routing.read_alias_for(request, self.body)
        return replicas.answer_with_fallback(alias, lambda: self._answer(request, key, version))

    def _answer(
        self, request: HttpRequest, key: str | None, version: str | None
    ) -> HttpResponseBase:
        """The request run by GraphQL, in one transaction on the database its reads go to (a
        query's on a replica: a read-only one there)."""
        self.failed, self.context = True, None
        with transaction.atomic(using=replicas.read_alias()):
            try:
                response = self.run(request=request)
            except HTTPException as exc:
                response = problem_response(
                    request, ProblemType.MALFORMED_REQUEST, detail=exc.reason
                )
        if decision_of(request) is None:
            # Nothing measured the document (it did not parse, or it was no request at all).
            response = _charged(request, response)
        failed = self.failed or response.status_code != 200
        measure = self.context.measure if self.context is not None else None
        graphql_cache.keep(key, version, measure, response.content, failed=failed)
        setattr(response, OWN_ERROR_FORMAT, True)
        return response

    def parse_json(self, data: str | bytes) -> Any:
        # The body parsed once already (graphql_api/cache.py names its document from it).
        parsed = self.body if data is self.request.body and self.body is not None else None
        if parsed is None:
            parsed = super().parse_json(data)
        # Strawberry reads any other JSON (a string, a number) as an object: a 500, not a 400.
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return parsed

    def get_context(self, request: HttpRequest, response: HttpResponse) -> Context:
        self.context = Context(request=request, response=response, principal=self.principal)
        return self.context

    def execute_single(
        self, request, request_adapter, sub_response, context, root_value, request_data
    ):
        query = request_data.query or ""
        limit = settings.GRAPHQL_MAX_DOCUMENT_BYTES
        size = len(query.encode())
        if size > limit:
            ratelimit.limit_api_request(request)
            return ExecutionResult(
                data=None,
                errors=[
                    errors.graphql_error(
                        ProblemType.VALIDATION_ERROR,
                        f"The query is too complex: the document is {size} bytes; the limit is "
                        f"{limit}.",
                        code=errors.QUERY_TOO_COMPLEX,
                    )
                ],
            )
        result = super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        if errors.replica_failed(result.errors):
            raise replicas.ReplicaFailed()  # answered again from the primary (dispatch)
        return result

    def process_result(self, request: HttpRequest, result: ExecutionResult) -> GraphQLHTTPResponse:
        data: GraphQLHTTPResponse = {"data": result.data}
        self.failed = bool(result.errors)
        if result.errors:
            data["errors"] = [errors.formatted(error) for error in result.errors]
        if result.extensions:
            data["extensions"] = result.extensions
        return data


def authenticate(request: HttpRequest) -> Principal:
    """The caller of a GraphQL request, acting from here on in its tenant: a 401 problem without
    a credential of a registered type (before any GraphQL runs), a 403 for a suspended tenant."""
    found = credentials.from_header(get_authorization_header(request))
    if found is None:
        raise exceptions.NotAuthenticated()
    credential_type, credential = found
    principal = credential_type.verify(credential)
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    access.admit_second_factor(principal)
    credentials.act_for_request(principal)
    credential_type.used(principal)
    request.auth = principal
    return principal


def _charged(
    request: HttpRequest, response: HttpResponseBase, *, anonymous: bool = False
) -> HttpResponseBase:
    """`response`, once the request took its one token; the 429 problem if it could not."""
    try:
        if anonymous:
            ratelimit.limit_anonymous_request(request)
        else:
            ratelimit.limit_api_request(request)
    except Problem as problem:
        return problem_for_exception(request, problem)
    return response


@require_safe
def schema_sdl(request: HttpRequest, sdl: Callable[[], str]) -> HttpResponseBase:
    """The schema as SDL, for any signed-in client (introspection may be off)."""
    try:
        authenticate(request)
    except (Problem, exceptions.APIException) as refused:
        return _charged(request, problem_for_exception(request, refused), anonymous=True)
    return _charged(request, HttpResponse(sdl(), content_type="text/plain; charset=utf-8"))
