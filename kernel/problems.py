"""RFC 9457 problem details: the one shape of every error the service returns.

What the rest of the code uses:

- `ProblemType`, the catalogue. Each member has a slug (the last segment of its `type` URI), a
  title, an HTTP status and a default detail. docs/errors.md says when each one is returned.
- `Problem`, the exception views and services raise for a domain problem:
  `raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")`.
- `problem_response()`, the same problem as a response, for plain Django views and middleware
  (`problem_response(request, ProblemType.SERVICE_UNAVAILABLE, extra={"checks": checks})`).
- `exception_handler` (DRF's EXCEPTION_HANDLER), `handler404`/`handler500` (Django's) and
  `csrf_failure` (CSRF_FAILURE_VIEW). kernel.middleware.ProblemDetailsMiddleware covers the rest.

Authentication classes import this module, and DRF imports those while `rest_framework.views` is
still loading, so this module must not import `rest_framework.views` at import time.
"""

import logging
from collections.abc import Iterator, Mapping
from enum import Enum
from http import HTTPStatus
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from kernel.tracing import get_request_id

PROBLEM_CONTENT_TYPE = "application/problem+json"
# RFC 6750: the challenge every 401 carries, whichever authenticator the view has.
WWW_AUTHENTICATE = 'Bearer realm="api"'

logger = logging.getLogger(__name__)


class ProblemType(Enum):
    """The catalogue of problem types: (slug, title, status, default detail)."""

    VALIDATION_ERROR = ("validation-error", "Invalid input", 400, "The request is invalid.")
    MALFORMED_REQUEST = (
        "malformed-request",
        "Malformed request",
        400,
        "The request could not be understood.",
    )
    NOT_AUTHENTICATED = (
        "not-authenticated",
        "Not authenticated",
        401,
        "Authentication credentials were not provided or are not valid.",
    )
    MFA_REQUIRED = (
        "mfa-required",
        "Second factor required",
        401,
        "The password is right; send a code of the second factor with the mfa_token.",
    )
    SSO_FAILED = (
        "sso-failed",
        "Single sign-on failed",
        401,
        "The identity provider's answer does not sign anybody in: start again.",
    )
    PERMISSION_DENIED = (
        "permission-denied",
        "Permission denied",
        403,
        "You do not have permission to perform this action.",
    )
    TENANT_SUSPENDED = ("tenant-suspended", "Tenant suspended", 403, "This tenant is suspended.")
    MFA_ENROLLMENT_REQUIRED = (
        "mfa-enrollment-required",
        "Second factor required by the tenant",
        403,
        "This tenant requires two-factor authentication: set it up first.",
    )
    SSO_REQUIRED = (
        "sso-required",
        "Single sign-on required",
        403,
        "This tenant signs its people in through its identity provider: use single sign-on.",
    )
    QUOTA_EXCEEDED = (
        "quota-exceeded",
        "Quota exceeded",
        403,
        "The tenant's plan does not allow more of this resource.",
    )
    NOT_FOUND = ("not-found", "Not found", 404, "The requested resource was not found.")
    METHOD_NOT_ALLOWED = (
        "method-not-allowed",
        "Method not allowed",
        405,
        "The method is not allowed on this resource.",
    )
    NOT_ACCEPTABLE = (
        "not-acceptable",
        "Not acceptable",
        406,
        "No available representation satisfies the Accept header.",
    )
    CONFLICT = (
        "conflict",
        "Conflict",
        409,
        "The request conflicts with the current state of the resource.",
    )
    IDEMPOTENCY_KEY_IN_USE = (
        "idempotency-key-in-use",
        "Request in progress",
        409,
        "A request with this Idempotency-Key is still being processed; retry later.",
    )
    EXPORT_EXPIRED = (
        "export-expired",
        "Export expired",
        410,
        "This export's link has expired and its archive is deleted; ask for a new export.",
    )
    PRECONDITION_FAILED = (
        "precondition-failed",
        "Precondition failed",
        412,
        "If-Match does not match the current ETag of the resource.",
    )
    PAYLOAD_TOO_LARGE = (
        "payload-too-large",
        "Request body too large",
        413,
        "The request body is larger than the service accepts.",
    )
    UNSUPPORTED_MEDIA_TYPE = (
        "unsupported-media-type",
        "Unsupported media type",
        415,
        "The media type of the request body is not supported here.",
    )
    IDEMPOTENCY_KEY_REUSED = (
        "idempotency-key-reused",
        "Idempotency key reused",
        422,
        "This Idempotency-Key was already used with a different request.",
    )
    RATE_LIMITED = (
        "rate-limited",
        "Too many requests",
        429,
        "The rate limit is exceeded; retry after the number of seconds in Retry-After.",
    )
    INTERNAL_ERROR = (
        "internal-error",
        "Internal server error",
        500,
        "An unexpected error occurred. Quote the request_id when you report it.",
    )
    IDENTITY_PROVIDER_UNAVAILABLE = (
        "identity-provider-unavailable",
        "Identity provider unavailable",
        502,
        "The tenant's identity provider could not be reached, or did not answer as OpenID "
        "Connect does; nothing was changed. Try again later.",
    )
    SERVICE_UNAVAILABLE = (
        "service-unavailable",
        "Service unavailable",
        503,
        "The service cannot serve this request right now; try again later.",
    )

    def __init__(self, slug: str, title: str, status: int, default_detail: str) -> None:
        self.slug = slug
        self.title = title
        self.status = status
        self.default_detail = default_detail

    @property
    def uri(self) -> str:
        return f"{settings.PROBLEM_TYPE_BASE_URL.rstrip('/')}/{self.slug}"


# What a bare status code stands for when nothing more specific is known: Django's own error
# responses, and DRF exceptions that are not a `Problem`. Other statuses get `about:blank`.
TYPE_FOR_STATUS: dict[int, ProblemType] = {
    400: ProblemType.MALFORMED_REQUEST,
    401: ProblemType.NOT_AUTHENTICATED,
    403: ProblemType.PERMISSION_DENIED,
    404: ProblemType.NOT_FOUND,
    405: ProblemType.METHOD_NOT_ALLOWED,
    406: ProblemType.NOT_ACCEPTABLE,
    409: ProblemType.CONFLICT,
    412: ProblemType.PRECONDITION_FAILED,
    413: ProblemType.PAYLOAD_TOO_LARGE,
    415: ProblemType.UNSUPPORTED_MEDIA_TYPE,
    429: ProblemType.RATE_LIMITED,
    500: ProblemType.INTERNAL_ERROR,
    503: ProblemType.SERVICE_UNAVAILABLE,
}

_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "request_id"})


class FieldError(TypedDict):
    field: str | None
    code: str
    message: str


class Problem(exceptions.APIException):
    """A domain problem: `raise Problem(ProblemType.CONFLICT, detail="…")` from a view or service.

    `detail` reaches the client as written, so write it for them. `extra` adds members to the body
    (`{"limit": 100}`) and `headers` adds response headers (`{"Retry-After": "30"}`).
    """

    def __init__(
        self,
        problem_type: ProblemType,
        detail: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _check_extra(extra)
        self.problem_type = problem_type
        self.status_code = problem_type.status
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(detail=detail or problem_type.default_detail, code=problem_type.slug)


class InvalidInput(exceptions.ValidationError):
    """Input a service refuses, field by field, where only the domain can tell (a category of
    another tenant, an invitation token that no longer holds): the same 400 `validation-error`,
    with its `errors`, as a serializer's, from `{"field": ["message"]}`. Services raise this (or a
    `Problem`), never the HTTP layer's own exceptions."""


class CredentialRefused(exceptions.AuthenticationFailed):
    """A credential a service checks itself (an account's password when an invitation is
    accepted) is wrong: the same 401 `not-authenticated` as a refused token."""


def problem_response(
    request: HttpRequest | Request,
    problem_type: ProblemType,
    *,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """The problem as an `application/problem+json` response, for views and middleware."""
    return _render(
        request,
        type_uri=problem_type.uri,
        title=problem_type.title,
        status=problem_type.status,
        detail=detail or problem_type.default_detail,
        extra=extra,
        headers=headers,
    )


def problem_for_status(
    request: HttpRequest, status: int, *, headers: Mapping[str, str] | None = None
) -> JsonResponse:
    """The generic problem for an error status, when all that is known is the status."""
    headers = dict(headers or {})
    problem_type = TYPE_FOR_STATUS.get(status)
    if problem_type is None:
        # RFC 9457 §4.2.1: no more semantics than the status code itself.
        title = _status_phrase(status)
        return _render(
            request,
            type_uri="about:blank",
            title=title,
            status=status,
            detail=f"{title}.",
            headers=headers,
        )
    detail = problem_type.default_detail
    if problem_type is ProblemType.METHOD_NOT_ALLOWED:
        detail = f'Method "{request.method}" is not allowed here.'
    if problem_type is ProblemType.NOT_AUTHENTICATED:
        headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    return _render(
        request,
        type_uri=problem_type.uri,
        title=problem_type.title,
        status=status,
        detail=detail,
        headers=headers,
    )


def problem_for_exception(request: HttpRequest | Request, exc: Exception) -> JsonResponse | None:
    """The problem an exception stands for; None for an unexpected one (a bug: a 500)."""
    if isinstance(exc, Problem):
        return problem_response(
            request,
            exc.problem_type,
            detail=str(exc.detail),
            extra=exc.extra,
            headers=exc.headers,
        )
    if isinstance(exc, exceptions.ValidationError):
        return _validation_problem(request, exc.detail)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # DRF lowers these to 403 when the view's first authenticator sends no challenge; a
        # missing or bad credential is a 401 here whatever the view.
        return problem_response(
            request,
            ProblemType.NOT_AUTHENTICATED,
            detail=_detail_text(exc.detail, ProblemType.NOT_AUTHENTICATED.default_detail),
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    if isinstance(exc, exceptions.Throttled):
        wait = {"Retry-After": str(exc.wait)} if exc.wait is not None else {}
        return problem_response(
            request, ProblemType.RATE_LIMITED, detail=str(exc.detail), headers=wait
        )
    if isinstance(exc, exceptions.APIException):
        return _api_exception_problem(request, exc)
    # Django's messages for these may name models or whatever the raiser wrote: keep them inside.
    if isinstance(exc, Http404):
        return problem_response(request, ProblemType.NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        return problem_response(request, ProblemType.PERMISSION_DENIED)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away under the request (a restart, a failover, a terminated
        # session): its transaction is rolled back, Django discards the broken connection at the
        # end of the request, and the next one opens a new connection. A retry will do: a 503.
        logger.warning("Database unavailable in %s %s", request.method, request.path, exc_info=exc)
        return problem_response(
            request, ProblemType.SERVICE_UNAVAILABLE, headers={"Retry-After": "1"}
        )
    return None


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> JsonResponse | None:
    """DRF's EXCEPTION_HANDLER. None lets an unexpected exception reach the middleware."""
    # Imported here: see the module docstring.
    from rest_framework.views import set_rollback

    response = problem_for_exception(context["request"], exc)
    if response is not None:
        set_rollback()
    return response


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(request, ProblemType.NOT_FOUND)


def handler500(request: HttpRequest) -> JsonResponse:
    # Django has logged the exception (logger django.request) before it calls this.
    return problem_response(request, ProblemType.INTERNAL_ERROR)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF_FAILURE_VIEW: Django's reasons are fixed sentences, safe and useful to show."""
    detail = f"CSRF verification failed. {reason}".strip()
    return problem_response(request, ProblemType.PERMISSION_DENIED, detail=detail)


def validation_errors(detail: Any, path: tuple[str, ...] = ()) -> Iterator[FieldError]:
    """Flatten a DRF ValidationError's detail into one entry per message.

    Nested fields become dotted paths (`attributes.color`, `items.0.name`). Non-field errors
    belong to the object they are about: `null` at the top, the nested field's path below it.
    """
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            is_object_level = key in (api_settings.NON_FIELD_ERRORS_KEY, NON_FIELD_ERRORS)
            yield from validation_errors(value, path if is_object_level else (*path, str(key)))
    elif isinstance(detail, list | tuple):
        for index, item in enumerate(detail):
            # A list of messages for one field, or one entry per item of a nested list.
            nested = isinstance(item, Mapping | list | tuple)
            yield from validation_errors(item, (*path, str(index)) if nested else path)
    else:
        yield {
            "field": ".".join(path) or None,
            "code": str(getattr(detail, "code", None) or "invalid"),
            "message": str(detail),
        }


def _validation_problem(request: HttpRequest | Request, detail: Any) -> JsonResponse:
    errors = list(validation_errors(detail))
    invalid = len({error["field"] for error in errors if error["field"] is not None})
    if invalid == 0:
        summary = ProblemType.VALIDATION_ERROR.default_detail
    elif invalid == 1:
        summary = "1 field is invalid."
    else:
        summary = f"{invalid} fields are invalid."
    return problem_response(
        request, ProblemType.VALIDATION_ERROR, detail=summary, extra={"errors": errors}
    )


def _api_exception_problem(
    request: HttpRequest | Request, exc: exceptions.APIException
) -> JsonResponse:
    status = exc.status_code
    if status >= 500:
        # Server-side APIExceptions that are not a Problem carry whatever their raiser wrote:
        # log it, show the generic problem.
        logger.error("%s answered %s", type(exc).__name__, status, exc_info=exc)
        return problem_for_status(request, status)
    problem_type = TYPE_FOR_STATUS.get(status)
    detail = _detail_text(exc.detail, f"{_status_phrase(status)}.")
    if problem_type is None:
        title = _status_phrase(status)
        return _render(request, type_uri="about:blank", title=title, status=status, detail=detail)
    return problem_response(request, problem_type, detail=detail)


def _render(
    request: HttpRequest | Request,
    *,
    type_uri: str,
    title: str,
    status: int,
    detail: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    _check_extra(extra)
    body = {
        "type": type_uri,
        "title": title,
        "status": status,
        "detail": str(detail),
        "instance": request.path,
        "request_id": get_request_id(),
        **(extra or {}),
    }
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _check_extra(extra: Mapping[str, Any] | None) -> None:
    clash = _STANDARD_MEMBERS.intersection(extra or {})
    if clash:
        raise ValueError(f"Extension members may not replace standard ones: {sorted(clash)}")


def _detail_text(detail: Any, default: str) -> str:
    """One sentence from an APIException's detail, which may also be a list or a dict."""
    if isinstance(detail, str):
        return str(detail)
    if isinstance(detail, Mapping) and isinstance(detail.get("detail"), str):
        return str(detail["detail"])
    if isinstance(detail, list) and len(detail) == 1 and isinstance(detail[0], str):
        return str(detail[0])
    return default


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
