"""The kernel's problems as GraphQL errors.

A resolver raises what a REST view would (a `Problem`, a validation error, Http404); this module
turns each into an entry of `errors[]` whose `extensions` hold `code` (the contract's short list),
`problem` (the REST problem `type` URI) and `request_id`, plus the field errors of invalid input.
Anything else is a bug: logged with its traceback, answered as INTERNAL_SERVER_ERROR with nothing
of its message.
"""

import logging
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.http import Http404
from graphql import GraphQLError
from rest_framework import exceptions
from strawberry.utils.str_converters import to_camel_case

from kernel import replicas
from kernel.problems import Problem, ProblemType, validation_errors
from kernel.tracing import get_request_id

logger = logging.getLogger(__name__)

# extensions.code of each problem type; a type not named here is its status's code.
CODE_OF_PROBLEM = {
    ProblemType.VALIDATION_ERROR: "BAD_USER_INPUT",
    ProblemType.MALFORMED_REQUEST: "BAD_USER_INPUT",
    ProblemType.NOT_AUTHENTICATED: "UNAUTHENTICATED",
    ProblemType.PERMISSION_DENIED: "FORBIDDEN",
    ProblemType.TENANT_SUSPENDED: "FORBIDDEN",
    ProblemType.QUOTA_EXCEEDED: "FORBIDDEN",
    ProblemType.NOT_FOUND: "NOT_FOUND",
    ProblemType.CONFLICT: "CONFLICT",
    ProblemType.PRECONDITION_FAILED: "PRECONDITION_FAILED",
    ProblemType.RATE_LIMITED: "RATE_LIMITED",
    ProblemType.INTERNAL_ERROR: "INTERNAL_SERVER_ERROR",
    ProblemType.SERVICE_UNAVAILABLE: "INTERNAL_SERVER_ERROR",
}
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def graphql_error(
    problem_type: ProblemType,
    message: str | None = None,
    *,
    code: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> GraphQLError:
    """An error raised by the endpoint itself (a limit, the rate limit), already in its final
    shape."""
    return GraphQLError(
        message or problem_type.default_detail,
        extensions=_extensions(problem_type, code=code, **(extensions or {})),
    )


def formatted(error: GraphQLError) -> dict[str, Any]:
    """The `errors[]` entry of `error`."""
    entry = _shaped(error).formatted
    return {name: value for name, value in entry.items() if value is not None}


def is_unexpected(error: GraphQLError) -> bool:
    """Whether `error` is a bug rather than an answer (what gets logged with a traceback)."""
    original = error.original_error
    return original is not None and not _refused_value(error) and _known(original) is None


def _shaped(error: GraphQLError) -> GraphQLError:
    if error.extensions and "code" in error.extensions:
        return error  # made here already (graphql_error)
    original = error.original_error
    if original is None or _refused_value(error):
        # The document itself: a syntax error, an unknown field, a wrong argument type, a value
        # its type refuses (`id: "not-a-uuid"`).
        return _with(error, error.message, _extensions(ProblemType.MALFORMED_REQUEST))
    known = _known(original)
    if known is None:
        return _with(
            error,
            ProblemType.INTERNAL_ERROR.default_detail,
            _extensions(ProblemType.INTERNAL_ERROR),
        )
    message, extensions = known
    return _with(error, message, extensions)


def _refused_value(error: GraphQLError) -> bool:
    """A value of the document or of its variables that a scalar refused: GraphQL's own error,
    before execution (so without a path), around the scalar's own words."""
    original = error.original_error
    return isinstance(original, GraphQLError) and not original.extensions and error.path is None


def _known(original: Exception) -> tuple[str, dict[str, Any]] | None:
    """The message and extensions of an exception the kernel knows; None for a bug."""
    if isinstance(original, GraphQLError) and original.extensions:
        return original.message, original.extensions
    if isinstance(original, Problem):
        return str(original.detail), _extensions(original.problem_type, **original.extra)
    if isinstance(original, exceptions.ValidationError):
        errors = [
            {**entry, "field": _camel_path(entry["field"])}
            for entry in validation_errors(original.detail)
        ]
        invalid = len({entry["field"] for entry in errors if entry["field"] is not None})
        message = "1 field is invalid." if invalid == 1 else f"{invalid} fields are invalid."
        if invalid == 0:
            message = ProblemType.VALIDATION_ERROR.default_detail
        return message, _extensions(ProblemType.VALIDATION_ERROR, errors=errors)
    if isinstance(original, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return str(original.detail), _extensions(ProblemType.NOT_AUTHENTICATED)
    if isinstance(original, exceptions.PermissionDenied):
        return str(original.detail), _extensions(ProblemType.PERMISSION_DENIED)
    if isinstance(original, Http404 | exceptions.NotFound):
        return ProblemType.NOT_FOUND.default_detail, _extensions(ProblemType.NOT_FOUND)
    return None


def _extensions(problem_type: ProblemType, *, code: str | None = None, **extra: Any) -> dict:
    return {
        "code": code or CODE_OF_PROBLEM.get(problem_type, "INTERNAL_SERVER_ERROR"),
        "problem": problem_type.uri,
        "request_id": get_request_id(),
        **extra,
    }


def _with(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def _camel_path(path: str | None) -> str | None:
    """REST's field names (`price_min`, `attributes.color`) as GraphQL spells them."""
    if path is None:
        return None
    return ".".join(to_camel_case(part) for part in path.split("."))


def replica_failed(errors: Iterable[GraphQLError] | None) -> bool:
    """Whether the database failed under resolvers reading from a replica: no bug, and no answer
    either, as the view answers the request again from the primary (graphql_api/view.py)."""
    if replicas.read_alias() == DEFAULT_DB_ALIAS:
        return False
    return any(isinstance(error.original_error, DatabaseError) for error in errors or ())


def log_unexpected(errors: Iterable[GraphQLError]) -> None:
    errors = list(errors)
    if replica_failed(errors):
        return  # logged as the replica's failure where the request is answered again
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "Unexpected error in GraphQL resolver %s",
                ".".join(str(part) for part in error.path or ()),
                exc_info=error.original_error,
            )
