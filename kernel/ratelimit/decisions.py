"""What a check decided, where it is kept, and how it is told: the RateLimit-* headers, and the
429 of a refused request."""

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from kernel.problems import Problem, ProblemType

LIMIT_HEADER = "RateLimit-Limit"
REMAINING_HEADER = "RateLimit-Remaining"
RESET_HEADER = "RateLimit-Reset"
RETRY_AFTER_HEADER = "Retry-After"

# Where a request keeps its decision for the middleware (on Django's HttpRequest, which DRF's
# Request wraps, so that both see the same one).
_DECISION_ATTRIBUTE = "_ratelimit_decision"


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as the RateLimit-* headers state it: the most a client may send at once, what
    is left now, and the seconds until it is all back."""

    limit: int
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Seconds until the request would be allowed; 0 when it is.
    retry_after: int = 0
    quotas: tuple[Quota, ...] = ()
    # Failures counted so far in each window of the check, in order.
    failures: tuple[int, ...] = ()
    # The limit that refused the request.
    refused_by: str = ""
    # False when Redis could not be asked: there is nothing to state in headers.
    checked: bool = True

    @property
    def headline(self) -> Quota | None:
        """The quota the headers state: the one closest to running out."""
        if not self.quotas:
            return None
        return min(self.quotas, key=lambda quota: (quota.remaining, -quota.reset))


UNCHECKED_DECISION = Decision(allowed=True, checked=False)


def _seconds(count: int) -> str:
    return "1 second" if count == 1 else f"{count} seconds"


def rate_limited(decision: Decision) -> Problem:
    reason = f" ({decision.refused_by})" if decision.refused_by else ""
    return Problem(
        ProblemType.RATE_LIMITED,
        detail=f"Too many requests{reason}; retry in {_seconds(decision.retry_after)}.",
        headers={RETRY_AFTER_HEADER: str(decision.retry_after)},
    )


# --- the decision on the request, and the headers ----------------------------------------------


def http_request(request: Any) -> HttpRequest:
    # DRF's Request wraps Django's: keep the decision where the middleware will look.
    return getattr(request, "_request", request)


def attach(request: Any, decision: Decision) -> None:
    setattr(http_request(request), _DECISION_ATTRIBUTE, decision)


def decision_of(request: Any) -> Decision | None:
    return getattr(http_request(request), _DECISION_ATTRIBUTE, None)


def apply_headers(response: HttpResponseBase, decision: Decision) -> None:
    quota = decision.headline
    if quota is not None:
        response[LIMIT_HEADER] = str(quota.limit)
        response[REMAINING_HEADER] = str(quota.remaining)
        response[RESET_HEADER] = str(quota.reset)
    if not decision.allowed:
        response[RETRY_AFTER_HEADER] = str(decision.retry_after)
