"""A check: every bucket and window of a request in one script call (with, for a caller that
asks, one command of its own in the same round trip), the decision left on the request; and the
checks of an API request, by who is calling."""

import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from kernel.problems import Problem, ProblemType
from kernel.ratelimit.backend import backend
from kernel.ratelimit.buckets import (
    FailureWindow,
    TokenBucket,
    anonymous_buckets,
    principal_buckets,
)
from kernel.ratelimit.decisions import (
    UNCHECKED_DECISION,
    Decision,
    Quota,
    attach,
    decision_of,
    http_request,
    rate_limited,
)
from kernel.ratelimit.scripts import CHECK

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check(
    request: HttpRequest,
    buckets: Sequence[TokenBucket],
    windows: Sequence[FailureWindow] = (),
    *,
    fail_closed_for_writes: bool = True,
    cost: int = 1,
) -> Decision:
    """Take `cost` tokens from every bucket if all have them and no window is locked; one round
    trip. A cost above a bucket's capacity is that capacity: the request is possible, once the
    bucket is full.

    The decision is left on the request for the headers. When Redis is unavailable the request
    is allowed, unless it is a write and RATELIMIT_FAIL_OPEN_WRITES is false: then a 503
    `service-unavailable` is raised (with `fail_closed_for_writes`; the middleware, which checks
    after the fact, passes False).
    """
    keys, args = _check_call(buckets, windows)
    if cost != 1:
        args.append(max(1, min([cost, *(bucket.capacity for bucket in buckets)])))
    reply = backend().run(CHECK, keys, args)
    return _decided(request, buckets, windows, reply, fail_closed=fail_closed_for_writes)


def check_with(
    request: HttpRequest, buckets: Sequence[TokenBucket], command: Sequence[Any]
) -> tuple[Decision, Any]:
    """`check` of `buckets`, and one more command of the caller's sent to Redis in the same
    round trip; the command's reply comes back with the decision (None when Redis could not be
    asked). Redis runs the command whatever the limits decide: what to make of its reply when
    the request is refused is the caller's business."""
    keys, args = _check_call(buckets, ())
    replies = backend().run_with(CHECK, keys, args, command)
    reply, other = (None, None) if replies is None else replies
    return _decided(request, buckets, (), reply, fail_closed=True), other


def _check_call(
    buckets: Sequence[TokenBucket], windows: Sequence[FailureWindow]
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of the CHECK script."""
    args: list[Any] = [len(buckets), len(windows)]
    for bucket in buckets:
        args += [bucket.capacity, repr(float(bucket.per_second))]
    args += [window.limit for window in windows]
    return [bucket.key for bucket in buckets] + [window.key for window in windows], args


def _decided(
    request: HttpRequest,
    buckets: Sequence[TokenBucket],
    windows: Sequence[FailureWindow],
    reply: list | None,
    *,
    fail_closed: bool,
) -> Decision:
    """The decision in the CHECK script's reply, left on the request; without a reply (Redis
    unavailable), the request goes `unchecked`."""
    if reply is None:
        return unchecked(request, fail_closed=fail_closed)
    allowed, wait_ms, *rest = (int(value) for value in reply)
    quotas, empty = bucket_quotas(buckets, rest)
    refused_by = "" if allowed else empty
    offset = 2 * len(buckets)
    failures = []
    for index, window in enumerate(windows):
        count, ttl_ms = rest[offset + 2 * index], rest[offset + 2 * index + 1]
        failures.append(count)
        quotas.append(Quota(window.limit, max(window.limit - count, 0), seconds(ttl_ms)))
        if not allowed and not refused_by and count >= window.limit:
            refused_by = window.label
    decision = Decision(
        allowed=bool(allowed),
        retry_after=0 if allowed else max(seconds(wait_ms), 1),
        quotas=tuple(quotas),
        failures=tuple(failures),
        refused_by=refused_by,
    )
    attach(request, decision)
    return decision


def bucket_quotas(buckets: Sequence[TokenBucket], reply: Sequence[int]) -> tuple[list[Quota], str]:
    """The buckets' part of a script's reply (tokens left and ms until full, for each) as quotas,
    and the label of the first bucket without a token ("" if none)."""
    quotas, empty = [], ""
    for index, bucket in enumerate(buckets):
        tokens, full_ms = reply[2 * index], reply[2 * index + 1]
        quotas.append(Quota(bucket.capacity, max(tokens, 0), seconds(full_ms)))
        if not empty and tokens < 1:
            empty = bucket.label
    return quotas, empty


def enforce(
    request: HttpRequest,
    buckets: Sequence[TokenBucket],
    windows: Sequence[FailureWindow] = (),
    *,
    cost: int = 1,
) -> Decision:
    """`check`, raising the 429 problem (with Retry-After) when the request is refused."""
    decision = check(request, buckets, windows, cost=cost)
    if not decision.allowed:
        raise rate_limited(decision)
    return decision


def unchecked(request: HttpRequest, *, fail_closed: bool) -> Decision:
    """A request Redis could not check: served without a limit, unless `fail_closed` and it is
    a write that RATELIMIT_FAIL_OPEN_WRITES does not let through (a 503)."""
    # Left on the request even when refusing, so that the middleware does not try again.
    attach(request, UNCHECKED_DECISION)
    if fail_closed and not _may_go_unchecked(request):
        backend().unchecked("refused")
        raise Problem(
            ProblemType.SERVICE_UNAVAILABLE,
            detail="Rate limits cannot be checked right now, so writes are refused; retry later.",
        )
    backend().unchecked("allowed")
    return UNCHECKED_DECISION


def _may_go_unchecked(request: HttpRequest) -> bool:
    return request.method in SAFE_METHODS or settings.RATELIMIT_FAIL_OPEN_WRITES


def seconds(milliseconds: int) -> int:
    """A script's milliseconds as the whole seconds the headers state."""
    return max(math.ceil(milliseconds / 1000), 0)


# --- the checks of an API request ----------------------------------------------------------------


def limit_api_request(request: Any, *, cost: int = 1) -> Decision:
    """A tenant API request, once authentication has run: its tenant's and credential's buckets,
    or the address's anonymous bucket when it has no tenant credential. `cost` tokens from each
    (a costly GraphQL query takes more than one)."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    earlier = decision_of(request)
    if earlier is not None and earlier.checked:
        # A cached read that could not be answered before the view (kernel/api/cached_reads.py)
        # has taken its tokens already: one request, one token.
        if not earlier.allowed:
            raise rate_limited(earlier)
        return earlier
    # Imported here: DRF loads this module (DEFAULT_THROTTLE_CLASSES) as it defines APIView,
    # which may be before the apps, and so the models a principal holds, are ready.
    from kernel.principals import Principal

    principal = getattr(request, "auth", None)
    if isinstance(principal, Principal):
        return enforce(request, principal_buckets(principal), cost=cost)
    return enforce(request, anonymous_buckets(http_request(request)), cost=cost)


def limit_principal_with(
    request: Any, principal: Any, command: Sequence[Any]
) -> tuple[Decision, Any]:
    """The principal's buckets, checked in the same round trip as one more command of the
    caller's (`check_with`), for a caller that needs both at once (kernel/api/cached_reads.py).

    With rate limits off nothing is sent: the decision is unchecked and the reply None."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION, None
    return check_with(request, principal_buckets(principal), command)


def limit_anonymous_request(request: Any) -> Decision:
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    return enforce(request, anonymous_buckets(http_request(request)))
