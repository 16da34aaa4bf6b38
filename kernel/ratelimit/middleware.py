"""The limits as DRF and Django call them: the default throttle, and the middleware that writes
the RateLimit-* headers on every API response (and checks the responses no view limited)."""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from rest_framework.throttling import BaseThrottle

from kernel.problems import ProblemType, problem_response
from kernel.ratelimit.buckets import anonymous_buckets
from kernel.ratelimit.checks import check, limit_anonymous_request
from kernel.ratelimit.decisions import (
    RETRY_AFTER_HEADER,
    Decision,
    apply_headers,
    decision_of,
    rate_limited,
)

# The responses the middleware looks after: the REST API's and GraphQL's, not the admin's,
# probes' or metrics'.
API_PATH_PREFIX = "/api/"
API_PATH_PREFIXES = (API_PATH_PREFIX, "/graphql/")


class AnonymousAddressThrottle(BaseThrottle):
    """The default throttle of DRF views that limit nothing themselves (the schema and its
    viewers, accepting an invitation): the client address's anonymous bucket."""

    def allow_request(self, request: Any, view: Any) -> bool:
        limit_anonymous_request(request)  # raises the 429 problem itself
        return True


class RateLimitMiddleware:
    """The RateLimit-* headers on every API response, from the decision its view left.

    A response made without one (an unknown URL, a body refused as too large, a request turned
    away before any check) is checked against the address's anonymous bucket on its way out; if
    that is empty, the response, which did nothing, becomes the 429. Sits just outside
    ProblemDetailsMiddleware so that it sees that middleware's answers too.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        if not _applies(request):
            return response
        decision = decision_of(request)
        if decision is None:
            decision = _check_after_the_fact(request)
        return _finish(request, response, decision)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if not _applies(request):
            return response
        decision = decision_of(request)
        if decision is None:
            # Redis is a blocking client: off the event loop, as the views themselves run.
            decision = await sync_to_async(_check_after_the_fact, thread_sensitive=False)(request)
        return _finish(request, response, decision)


def _applies(request: HttpRequest) -> bool:
    return settings.RATELIMIT_ENABLED and request.path.startswith(API_PATH_PREFIXES)


def _check_after_the_fact(request: HttpRequest) -> Decision:
    # Nothing was done for this request that a refusal would have prevented, so Redis being
    # down never turns it into a 503.
    return check(request, anonymous_buckets(request), fail_closed_for_writes=False)


def _finish(
    request: HttpRequest, response: HttpResponseBase, decision: Decision
) -> HttpResponseBase:
    if not decision.checked:
        return response
    if not decision.allowed and response.status_code != 429:
        response = problem_response(
            request,
            ProblemType.RATE_LIMITED,
            detail=rate_limited(decision).detail,
            headers={RETRY_AFTER_HEADER: str(decision.retry_after)},
        )
    apply_headers(response, decision)
    return response
