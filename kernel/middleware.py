"""The kernel's middleware: problem details (nothing leaves the service as an error unless it is a
problem), the tenant scope of every request, and Django's browser middleware that the
token-authenticated surfaces skip."""

import functools
import logging
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from kernel.audit import request_context
from kernel.context import no_tenant
from kernel.problems import (
    PROBLEM_CONTENT_TYPE,
    ProblemType,
    problem_for_exception,
    problem_for_status,
    problem_response,
)

logger = logging.getLogger("kernel.problems")

# Django answers these with a 400 and logs them to django.security, which security monitoring
# reads: let it, and rewrite its answer on the way out.
_LEFT_TO_DJANGO = (SuspiciousOperation, BadRequest, MultiPartParserError)

# Headers that describe the body being replaced. Every other one (Allow, Retry-After,
# WWW-Authenticate, Vary, the security headers) stays on the problem.
_BODY_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "content-language",
        "content-disposition",
        "etag",
        "last-modified",
    }
)


class ProblemDetailsMiddleware:
    """Three guarantees, for every request that reaches it (see MIDDLEWARE for its place):

    1. A body declared larger than MAX_REQUEST_BODY_BYTES (or the route's own limit in
       MAX_REQUEST_BODY_BYTES_BY_PATH) is refused with 413 before anything further in, a
       middleware or a view, reads it.
    2. A view's unexpected exception is logged with its traceback and answered with a 500 problem
       that says only that, with the request id; DEBUG changes nothing.
    3. Any other error response that is not a problem yet (Django's 404 for an unknown URL, a
       405 from a plain view, a CSRF or bad-Host failure, Django's answer to an exception raised
       in a middleware further in, technical debug pages included) is replaced by the problem for
       its status.

    Written for both modes so that under ASGI it adds no hop between threads.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        refusal = refuse_oversized_body(request)
        if refusal is not None:
            return refusal
        return ensure_problem(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        refusal = refuse_oversized_body(request)
        if refusal is not None:
            return refusal
        return ensure_problem(request, await self.get_response(request))

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if isinstance(exception, RequestDataTooBig):
            # Django's own answer would be a 400.
            return problem_response(request, ProblemType.PAYLOAD_TOO_LARGE)
        if isinstance(exception, _LEFT_TO_DJANGO):
            return None
        response = problem_for_exception(request, exception)
        if response is None:
            logger.error(
                "Unhandled exception in %s %s", request.method, request.path, exc_info=exception
            )
            response = problem_response(request, ProblemType.INTERNAL_ERROR)
            # Logged, with the traceback: spare Django's request logger a second, bare line.
            response._has_been_logged = True
        return response


def refuse_oversized_body(request: HttpRequest) -> HttpResponseBase | None:
    declared = request.META.get("CONTENT_LENGTH")
    if not declared:
        return None
    try:
        length = int(declared)
    except ValueError:
        # Django would fail on it later with a 500 when the body is read.
        return problem_response(
            request, ProblemType.MALFORMED_REQUEST, detail="Content-Length is not a number."
        )
    limit = body_limit(request)
    if length > limit:
        return problem_response(
            request,
            ProblemType.PAYLOAD_TOO_LARGE,
            detail=f"The request body is {length} bytes; the limit is {limit}.",
        )
    return None


def body_limit(request: HttpRequest) -> int:
    return body_limit_for(request.path_info)


def body_limit_for(path: str) -> int:
    """MAX_REQUEST_BODY_BYTES, unless MAX_REQUEST_BODY_BYTES_BY_PATH names this exact path (the
    bulk import's upload): one route's larger allowance leaves every other route's as it was."""
    by_path = getattr(settings, "MAX_REQUEST_BODY_BYTES_BY_PATH", None) or {}
    return by_path.get(path, settings.MAX_REQUEST_BODY_BYTES)


def ensure_problem(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """The response itself unless it is an error that is not a problem yet; then its problem."""
    if (
        response.status_code < 400
        or _is_problem(response)
        or getattr(response, OWN_ERROR_FORMAT, False)
    ):
        return response
    kept = {name: value for name, value in response.items() if name.lower() not in _BODY_HEADERS}
    problem = problem_for_status(request, response.status_code, headers=kept)
    problem.cookies = response.cookies
    # Whether Django has logged the response it made for an exception (django.utils.log).
    problem._has_been_logged = getattr(response, "_has_been_logged", False)
    return problem


# Set on the responses of a view whose errors have a format of their own by contract: OAuth's
# RFC 6749 JSON errors, which clients parse, and the HTML error page a person reads in a browser.
OWN_ERROR_FORMAT = "keeps_own_error_format"


def keeps_error_format(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Leave `view`'s error responses as the view made them (ProblemDetailsMiddleware's third
    guarantee does not apply to them); its exceptions are still answered with problems."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        setattr(response, OWN_ERROR_FORMAT, True)
        return response

    return wrapped


def _is_problem(response: HttpResponseBase) -> bool:
    media_type = response.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == PROBLEM_CONTENT_TYPE


# --- tenant scope --------------------------------------------------------------------------------
class TenantScopeMiddleware:
    """Every request starts with no tenant and ends with none, whatever happened in between.

    It also opens the request's audit context (kernel/audit.py): where the request comes from, for
    the events it records; authentication adds who is acting.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        with no_tenant(), request_context(request):
            return self.get_response(request)

    async def __acall__(self, request):
        with no_tenant(), request_context(request):
            return await self.get_response(request)


# --- the browser's middleware, skipped by the token-authenticated surfaces ----------------------
def is_token_surface(request: HttpRequest) -> bool:
    """A path of the REST API or GraphQL, which bearer tokens and API keys authenticate."""
    return request.path_info.startswith(settings.TOKEN_PATH_PREFIXES)


class _BrowserOnly:
    """Django's middleware, for the pages a person reaches with a browser and a session cookie
    (the admin, OAuth's sign-in and consent pages); requests to the token-authenticated surfaces
    go straight on. Such a request has no use for a user read from a session (its credential is
    in a header) or for messages: skipping them is work removed from every API request, not
    cached. Subclasses of Django's own, so that the admin's checks recognise them. (Sessions and
    CSRF stay Django's, by name, for `check --deploy`: config/settings/base.py.)"""

    def __call__(self, request: HttpRequest):
        if is_token_surface(request):
            return self.get_response(request)
        return super().__call__(request)


class AuthenticationMiddleware(_BrowserOnly, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, messages_middleware.MessageMiddleware):
    pass
