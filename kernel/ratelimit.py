"""Rate limits: token buckets and failure windows in Redis, one atomic script per check.

What is limited, and by what (docs/rate-limits.md has the numbers and the headers' meaning):

- A request with a tenant credential (every view built on kernel/api/base.py) takes a token from
  its tenant's bucket (capacity: the plan's `burst`, refilled at `requests_per_minute`) and from
  its credential's bucket in that tenant (a user or an API key: RATELIMIT_CREDENTIAL_SHARE of the
  tenant's), so that one runaway script cannot use up the whole tenant's allowance.
- Sign-in, signup, token refresh, logout and password reset take a token from the client
  address's bucket for those endpoints (RATELIMIT_AUTH_RATE), plus one per account or address as
  the endpoint needs. Failed sign-ins are counted per (address, account) pair, per address across
  accounts and per account across addresses; a count that reaches its limit locks that key out.
- Every other API request (no credential, a refused one, an unknown URL, the schema) takes a
  token from the address's anonymous bucket (RATELIMIT_ANONYMOUS_RATE).

A check is one Redis round trip: a Lua script reads every key involved, decides, and takes the
tokens only when all of them allow it (a refused request costs nothing). Cached reads that a
process answers from memory take their tokens from leases instead (below): a round trip per
lease, not per request. The clock is Redis's
`TIME`, so that every process agrees on it. Keys are raw Redis keys, named here in full under
RATELIMIT_KEY_PREFIX: the cache's KEY_FUNCTION does not apply to them.

Each check leaves its `Decision` on the request; `RateLimitMiddleware` writes the RateLimit-*
headers from it on every API response and checks the anonymous bucket for responses that no
view limited.

If Redis cannot be reached, nothing raises: the request is served without a limit (a safe
method always; a write unless RATELIMIT_FAIL_OPEN_WRITES is false, then it is a 503), the
failure is counted in `tenantapi_ratelimit_unchecked_total` and logged at most once a minute, and
Redis is left alone for RATELIMIT_BACKEND_RETRY_SECONDS, so that an outage does not add a timeout
to every request.
"""

import functools
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.crypto import salted_hmac
from prometheus_client import Counter
from rest_framework.throttling import BaseThrottle

from kernel.clientip import client_ip
from kernel.problems import Problem, ProblemType, problem_response
from kernel.redis import REDIS_ERRORS, Backoff, PerCache, Script, default_client

log = structlog.get_logger(__name__)

LIMIT_HEADER = "RateLimit-Limit"
REMAINING_HEADER = "RateLimit-Remaining"
RESET_HEADER = "RateLimit-Reset"
RETRY_AFTER_HEADER = "Retry-After"

# The responses the middleware looks after: the API's, not the admin's, probes' or metrics'.
API_PATH_PREFIX = "/api/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How often an ongoing Redis outage is written to the log (it is counted on every request).
FAILURE_LOG_SECONDS = 60.0
# Where a request keeps its decision for the middleware (on Django's HttpRequest, which DRF's
# Request wraps, so that both see the same one).
_DECISION_ATTRIBUTE = "_ratelimit_decision"

UNCHECKED = Counter(
    "ratelimit_unchecked",
    "API requests that could not be rate-limited because Redis was unavailable, by what "
    "happened to them (allowed: served without a limit; refused: answered 503).",
    ["outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


# --- what a check is made of -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """`capacity` tokens when full, refilled continuously at `per_second`; a request takes one."""

    key: str
    capacity: int
    per_second: float
    # Names the limit in a 429's detail ("this tenant", "sign-ins from this address").
    label: str


@dataclass(frozen=True, slots=True)
class FailureWindow:
    """Failures counted for `window` seconds from the first; at `limit`, locked for `lockout`."""

    key: str
    limit: int
    window: int
    lockout: int
    label: str


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
    # The raw values of the keys `check(read=...)` named, when the request was allowed.
    read: tuple[bytes | None, ...] = ()

    @property
    def headline(self) -> Quota | None:
        """The quota the headers state: the one closest to running out."""
        if not self.quotas:
            return None
        return min(self.quotas, key=lambda quota: (quota.remaining, -quota.reset))


UNCHECKED_DECISION = Decision(allowed=True, checked=False)


def rate(value: tuple[int, int]) -> tuple[int, float]:
    """A `(requests, period seconds)` setting as a bucket's capacity and refill per second."""
    requests, period = value
    capacity = max(int(requests), 1)
    return capacity, capacity / max(int(period), 1)


# --- the scripts -------------------------------------------------------------------------------

# What both scripts that take tokens share: Redis's clock, and the token buckets named by the
# first KEYS. A bucket is a hash {tokens, at}; absent, it is full.
_BUCKETS = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
-- Each of the n buckets refilled up to now, `back` tokens given back, none above its capacity;
-- capacities and refills per second in ARGV, in pairs from ARGV[first].
local function bucket_levels(n, first, back)
  local levels, capacities, rates = {}, {}, {}
  for i = 1, n do
    local capacity = tonumber(ARGV[first + 2 * i - 2])
    local per_ms = tonumber(ARGV[first + 2 * i - 1]) / 1000
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local level = capacity
    if state[1] and state[2] then
      local elapsed = math.max(0, now - tonumber(state[2]))
      level = math.min(capacity, tonumber(state[1]) + elapsed * per_ms + back)
    end
    levels[i], capacities[i], rates[i] = level, capacity, per_ms
  end
  return levels, capacities, rates
end
-- Takes `taken` tokens from every bucket and stores the levels.
local function take(levels, capacities, rates, taken)
  for i = 1, #levels do
    levels[i] = levels[i] - taken
    redis.call('HSET', KEYS[i], 'tokens', levels[i], 'at', now)
    -- Once full again the bucket is as good as absent.
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacities[i] - levels[i]) / rates[i]) + 1000)
  end
end
-- Each bucket's tokens left and ms until full, appended to the reply.
local function report(reply, levels, capacities, rates)
  for i = 1, #levels do
    reply[#reply + 1] = math.floor(levels[i])
    reply[#reply + 1] = math.ceil((capacities[i] - levels[i]) / rates[i])
  end
end
"""

# KEYS: n token buckets, then m failure windows, then r keys to read.
# ARGV: n, m, r, then capacity and refill-per-second of each bucket, then the limit of each
# window.
# Takes one token from every bucket, only if each has one and no window is at its limit.
# Replies (integers: Lua numbers are truncated in replies) {allowed, wait ms, then per bucket
# tokens left and ms until full, then per window failures counted and ms until it expires},
# then, if allowed, the value of each key to read (false where it has none).
_CHECK = Script(
    _BUCKETS
    + """
local n, m, r = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local levels, capacities, rates = bucket_levels(n, 4, 0)
local allowed, wait = 1, 0
for i = 1, n do
  if levels[i] < 1 then
    allowed = 0
    wait = math.max(wait, (1 - levels[i]) / rates[i])
  end
end
local counts, ttls = {}, {}
for j = 1, m do
  local key = KEYS[n + j]
  local count = tonumber(redis.call('GET', key) or '0')
  local ttl = math.max(0, redis.call('PTTL', key))
  if count >= tonumber(ARGV[3 + 2 * n + j]) then
    allowed = 0
    wait = math.max(wait, ttl)
  end
  counts[j], ttls[j] = count, ttl
end
if allowed == 1 then
  take(levels, capacities, rates, 1)
end
local reply = {allowed, math.ceil(wait)}
report(reply, levels, capacities, rates)
for j = 1, m do
  reply[#reply + 1] = counts[j]
  reply[#reply + 1] = ttls[j]
end
if allowed == 1 then
  for k = 1, r do
    reply[#reply + 1] = redis.call('GET', KEYS[n + m + k])
  end
end
return reply
"""
)

# KEYS: failure windows. ARGV: then limit, window ms and lockout ms of each.
# Counts one failure in each; a window that reaches its limit stays locked for its lockout.
# Replies {failures counted, ms until it expires} per window.
_RECORD_FAILURE = Script(
    """
local reply = {}
for j = 1, #KEYS do
  local limit = tonumber(ARGV[3 * j - 2])
  local window, lockout = tonumber(ARGV[3 * j - 1]), tonumber(ARGV[3 * j])
  local count = redis.call('INCR', KEYS[j])
  if count == 1 then redis.call('PEXPIRE', KEYS[j], window) end
  local ttl = redis.call('PTTL', KEYS[j])
  if count >= limit and ttl < lockout then
    redis.call('PEXPIRE', KEYS[j], lockout)
    ttl = lockout
  end
  reply[#reply + 1] = count
  reply[#reply + 1] = math.max(0, ttl)
end
return reply
"""
)


# KEYS: n token buckets. ARGV: n, tokens wanted, tokens given back, the share, then capacity and
# refill-per-second of each bucket.
# A lease: gives back to every bucket the unspent tokens of the caller's previous lease, then
# takes the same number of tokens from every bucket, only if each has one: as many as wanted,
# but at least one and no more than 1/share of what the emptiest bucket holds, so that
# leases shrink to single tokens as a bucket runs low.
# Replies {tokens taken (0: refused), wait ms, then per bucket tokens left and ms until full}.
_LEASE = Script(
    _BUCKETS
    + """
local n, want, back = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local share = tonumber(ARGV[4])
local levels, capacities, rates = bucket_levels(n, 5, back)
local lowest, wait = math.huge, 0
for i = 1, n do
  if levels[i] < 1 then wait = math.max(wait, (1 - levels[i]) / rates[i]) end
  lowest = math.min(lowest, levels[i])
end
local taken = 0
if lowest >= 1 then
  taken = math.max(1, math.min(want, math.floor(lowest / share)))
end
if taken > 0 or back > 0 then
  take(levels, capacities, rates, taken)
end
local reply = {taken, math.ceil(wait)}
report(reply, levels, capacities, rates)
return reply
"""
)


class _Backend:
    """The default cache's Redis as the limits use it, and what happens when it cannot be
    reached."""

    def __init__(self) -> None:
        self._backoff = Backoff()
        self._lock = threading.Lock()
        self._last_logged = 0.0
        self._unchecked_since_log = 0

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> list | None:
        """The script's reply, or None when Redis is unavailable (counted, logged, remembered)."""
        return self._ask(script.run, keys, args)

    def delete(self, key: str) -> None:
        self._ask(lambda client: client.delete(key))

    def _ask(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(client, *args)`, or None when Redis is unavailable."""
        if not self._backoff.allows():
            return None
        try:
            reply = call(default_client(), *args)
        except (*REDIS_ERRORS, NotImplementedError) as exc:
            # NotImplementedError: the cache is not Redis (RATELIMIT_ENABLED without REDIS_URL).
            self._failed(exc)
            return None
        self._recovered()
        return reply

    def unchecked(self) -> None:
        """A request went on (or was refused) without a check: count it."""
        with self._lock:
            self._unchecked_since_log += 1

    def _failed(self, exc: BaseException) -> None:
        self._backoff.failed(settings.RATELIMIT_BACKEND_RETRY_SECONDS)
        now = time.monotonic()
        with self._lock:
            if now - self._last_logged < FAILURE_LOG_SECONDS:
                return
            self._last_logged = now
            unchecked, self._unchecked_since_log = self._unchecked_since_log, 0
        log.warning(
            "ratelimit_backend_unavailable",
            error=type(exc).__name__,
            unchecked_requests_since_last_report=unchecked,
            retry_seconds=settings.RATELIMIT_BACKEND_RETRY_SECONDS,
        )

    def _recovered(self) -> None:
        down_seconds = self._backoff.recovered()
        if down_seconds is None:
            return
        with self._lock:
            self._last_logged = 0.0
            unchecked, self._unchecked_since_log = self._unchecked_since_log, 0
        log.info(
            "ratelimit_backend_recovered",
            down_seconds=round(down_seconds, 1),
            unchecked_requests_since_last_report=unchecked,
        )


# Per default cache, so that a process pointed elsewhere (a test, a changed setting) starts afresh.
_backends = PerCache(_Backend)


def _backend() -> _Backend:
    return _backends.get()


def check(
    request: HttpRequest,
    buckets: Sequence[TokenBucket],
    windows: Sequence[FailureWindow] = (),
    *,
    fail_closed_for_writes: bool = True,
    read: Sequence[str] = (),
) -> Decision:
    """Take a token from every bucket if all have one and no window is locked; one round trip.

    The decision is left on the request for the headers. When Redis is unavailable the request
    is allowed, unless it is a write and RATELIMIT_FAIL_OPEN_WRITES is false: then a 503
    `service-unavailable` is raised (with `fail_closed_for_writes`; the middleware, which checks
    after the fact, passes False).

    `read` names raw Redis keys whose values an allowed request gets in `Decision.read`, in the
    same round trip: what a cached read needs is fetched with its permission to be served.
    """
    args: list[Any] = [len(buckets), len(windows), len(read)]
    for bucket in buckets:
        args += [bucket.capacity, repr(float(bucket.per_second))]
    args += [window.limit for window in windows]
    keys = [bucket.key for bucket in buckets] + [window.key for window in windows] + list(read)
    reply = _backend().run(_CHECK, keys, args)
    if reply is None:
        return _unchecked(request, fail_closed=fail_closed_for_writes)

    counted = 2 + 2 * (len(buckets) + len(windows))
    allowed, wait_ms, *rest = (int(value) for value in reply[:counted])
    quotas, empty = _bucket_quotas(buckets, rest)
    refused_by = "" if allowed else empty
    offset = 2 * len(buckets)
    failures = []
    for index, window in enumerate(windows):
        count, ttl_ms = rest[offset + 2 * index], rest[offset + 2 * index + 1]
        failures.append(count)
        quotas.append(Quota(window.limit, max(window.limit - count, 0), _seconds(ttl_ms)))
        if not allowed and not refused_by and count >= window.limit:
            refused_by = window.label
    decision = Decision(
        allowed=bool(allowed),
        retry_after=0 if allowed else max(_seconds(wait_ms), 1),
        quotas=tuple(quotas),
        failures=tuple(failures),
        refused_by=refused_by,
        read=tuple(reply[counted:]),
    )
    attach(request, decision)
    return decision


def _bucket_quotas(buckets: Sequence[TokenBucket], reply: Sequence[int]) -> tuple[list[Quota], str]:
    """The buckets' part of a script's reply (tokens left and ms until full, for each) as quotas,
    and the label of the first bucket without a token ("" if none)."""
    quotas, empty = [], ""
    for index, bucket in enumerate(buckets):
        tokens, full_ms = reply[2 * index], reply[2 * index + 1]
        quotas.append(Quota(bucket.capacity, max(tokens, 0), _seconds(full_ms)))
        if not empty and tokens < 1:
            empty = bucket.label
    return quotas, empty


def enforce(
    request: HttpRequest,
    buckets: Sequence[TokenBucket],
    windows: Sequence[FailureWindow] = (),
) -> Decision:
    """`check`, raising the 429 problem (with Retry-After) when the request is refused."""
    decision = check(request, buckets, windows)
    if not decision.allowed:
        raise rate_limited(decision)
    return decision


def record_failures(request: HttpRequest, windows: Sequence[FailureWindow]) -> None:
    """Count a failure in each window (one round trip). The request's decision, from a check of
    the same windows, is updated so that its headers count this failure too."""
    args: list[Any] = []
    for window in windows:
        args += [window.limit, window.window * 1000, window.lockout * 1000]
    reply = _backend().run(_RECORD_FAILURE, [w.key for w in windows], args)
    if reply is None:
        _backend().unchecked()
        UNCHECKED.labels(outcome="allowed").inc()
        return
    counts = [int(value) for value in reply[0::2]]
    window_quotas = [
        Quota(window.limit, max(window.limit - count, 0), _seconds(int(ttl_ms)))
        for window, count, ttl_ms in zip(windows, counts, reply[1::2], strict=True)
    ]
    previous = decision_of(request)
    if previous is None or not previous.checked or len(previous.failures) != len(windows):
        return
    # A check's quotas are its buckets', then its windows' in the same order.
    bucket_quotas = previous.quotas[: len(previous.quotas) - len(windows)]
    attach(
        request,
        Decision(
            allowed=previous.allowed,
            quotas=(*bucket_quotas, *window_quotas),
            failures=tuple(counts),
        ),
    )


def forget_failures(window: FailureWindow) -> None:
    _backend().delete(window.key)


def rate_limited(decision: Decision) -> Problem:
    reason = f" ({decision.refused_by})" if decision.refused_by else ""
    return Problem(
        ProblemType.RATE_LIMITED,
        detail=f"Too many requests{reason}; retry in {decision.retry_after} seconds.",
        headers={RETRY_AFTER_HEADER: str(decision.retry_after)},
    )


def _unchecked(request: HttpRequest, *, fail_closed: bool) -> Decision:
    _backend().unchecked()
    # Left on the request even when refusing, so that the middleware does not try again.
    attach(request, UNCHECKED_DECISION)
    if fail_closed and not _may_go_unchecked(request):
        UNCHECKED.labels(outcome="refused").inc()
        raise Problem(
            ProblemType.SERVICE_UNAVAILABLE,
            detail="Rate limits cannot be checked right now, so writes are refused; retry later.",
        )
    UNCHECKED.labels(outcome="allowed").inc()
    return UNCHECKED_DECISION


def _may_go_unchecked(request: HttpRequest) -> bool:
    return request.method in SAFE_METHODS or settings.RATELIMIT_FAIL_OPEN_WRITES


def _seconds(milliseconds: int) -> int:
    return max(math.ceil(milliseconds / 1000), 0)


# --- the decision on the request, and the headers ----------------------------------------------


def _http_request(request: Any) -> HttpRequest:
    # DRF's Request wraps Django's: keep the decision where the middleware will look.
    return getattr(request, "_request", request)


def attach(request: Any, decision: Decision) -> None:
    setattr(_http_request(request), _DECISION_ATTRIBUTE, decision)


def decision_of(request: Any) -> Decision | None:
    return getattr(_http_request(request), _DECISION_ATTRIBUTE, None)


def apply_headers(response: HttpResponseBase, decision: Decision) -> None:
    quota = decision.headline
    if quota is not None:
        response[LIMIT_HEADER] = str(quota.limit)
        response[REMAINING_HEADER] = str(quota.remaining)
        response[RESET_HEADER] = str(quota.reset)
    if not decision.allowed:
        response[RETRY_AFTER_HEADER] = str(decision.retry_after)


# --- keys ------------------------------------------------------------------------------------


def _key(*parts: object) -> str:
    return ":".join([settings.RATELIMIT_KEY_PREFIX, *(str(part) for part in parts)])


def address_key(address: str) -> str:
    """The client address as limits count it: IPv6 clients by their /64, which one subscriber
    usually holds whole, so that walking through it does not reset the count."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False).network_address) + "/64"
    return str(parsed)


def account_key(account: str) -> str:
    """An account named by the client (an email), keyed without writing the email into Redis."""
    return salted_hmac("kernel.ratelimit.account", account.strip().lower()).hexdigest()[:32]


# --- policies ----------------------------------------------------------------------------------


def anonymous_buckets(request: HttpRequest) -> list[TokenBucket]:
    capacity, per_second = rate(settings.RATELIMIT_ANONYMOUS_RATE)
    address = address_key(client_ip(request))
    return [TokenBucket(_key("anon", address), capacity, per_second, "this address")]


def principal_buckets(principal: Any) -> tuple[TokenBucket, ...]:
    """The tenant's bucket, from its plan, and the credential's share of it."""
    tenant = principal.tenant
    plan = tenant.plan
    if principal.api_key is not None:
        credential = ("k", getattr(principal.api_key, "pk", None) or principal.api_key.id)
    else:
        credential = ("u", principal.user.pk)
    return _principal_buckets(
        tenant.pk,
        credential,
        plan.burst,
        plan.requests_per_minute,
        settings.RATELIMIT_CREDENTIAL_SHARE,
        settings.RATELIMIT_KEY_PREFIX,
    )


# A cached read asks for the same few principals' buckets over and over: made once per value.
@functools.lru_cache(maxsize=4096)
def _principal_buckets(
    tenant_id: Any,
    credential: tuple[str, Any],
    burst: int,
    per_minute: int,
    share: float,
    prefix: str,
) -> tuple[TokenBucket, ...]:
    # A plan set to 0 would divide by nothing: it means "as little as possible", one.
    capacity = max(burst, 1)
    per_second = max(per_minute, 1) / 60
    share = min(max(share, 0.0), 1.0)
    return (
        TokenBucket(f"{prefix}:t:{tenant_id}", capacity, per_second, "this tenant"),
        TokenBucket(
            f"{prefix}:t:{tenant_id}:{credential[0]}:{credential[1]}",
            max(math.ceil(capacity * share), 1),
            max(per_second * share, 1 / 3600),
            "this credential",
        ),
    )


def limit_api_request(request: Any) -> Decision:
    """A tenant API request, once authentication has run: its tenant's and credential's buckets,
    or the address's anonymous bucket when it has no tenant credential."""
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
        return enforce(request, principal_buckets(principal))
    return enforce(request, anonymous_buckets(_http_request(request)))


def limit_principal_and_read(request: Any, principal: Any, keys: Sequence[str]) -> Decision:
    """The principal's buckets and, if allowed, the raw values of `keys`: one round trip.

    With rate limits off, or Redis unavailable, the decision is unchecked and reads nothing."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    return check(request, principal_buckets(principal), read=keys)


# --- leases: a process's share of a principal's buckets, for cached reads ----------------------
#
# A cached hit (kernel/api/cached_reads.py) is otherwise answered from the process's memory; a
# round trip to take its one token would cost more than the rest of it. So a process takes its
# tokens in leases: a few at a time from the shared buckets, in one script call, spent one per
# request for at most RATELIMIT_LEASE_SECONDS, their unspent rest given back with the next call.
#
# What that changes, and what it does not: no more requests than the limit are ever admitted
# (every token is taken from the shared buckets before it is spent); a lease is at most
# 1/LEASE_SHARE of what the emptiest bucket holds, so as a bucket runs low leases shrink to one
# token and the count is exact where it matters. But a process may hold, for up to a lease's
# lifetime, tokens that another process is refused for; and a leased answer's RateLimit-Remaining
# is what the buckets held at the lease plus the tokens the process has not spent: an estimate
# that other processes' requests since then do not lower.

LEASE_SHARE = 8
LEASES_KEPT = 10_000

LEASES = Counter(
    "ratelimit_leases",
    "Rate-limit leases taken by cached reads (one Redis round trip each), by outcome.",
    ["outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


@dataclass(slots=True)
class _Lease:
    buckets: tuple[TokenBucket, ...]
    granted: int
    unspent: int
    # Each bucket's tokens after the lease was taken (they refill from there).
    left: tuple[int, ...]
    taken_at: float
    until: float

    def decision(self, now: float) -> Decision:
        quotas = []
        for bucket, left in zip(self.buckets, self.left, strict=True):
            refilled = (now - self.taken_at) * bucket.per_second
            level = min(bucket.capacity, left + self.unspent + refilled)
            reset = (bucket.capacity - level) / bucket.per_second
            quotas.append(Quota(bucket.capacity, max(int(level), 0), max(math.ceil(reset), 0)))
        return Decision(allowed=True, quotas=tuple(quotas))

    def next_want(self, now: float) -> int:
        """A lease spent before it ran out is doubled; one that ran out is cut to what was spent."""
        if self.unspent == 0 and now < self.until:
            return min(self.granted * 2, settings.RATELIMIT_LEASE_MAX_TOKENS)
        return max(min(self.granted - self.unspent, settings.RATELIMIT_LEASE_MAX_TOKENS), 1)


_leases: dict[tuple[str, ...], _Lease] = {}
_leases_lock = threading.Lock()


def limit_principal_leased(request: Any, principal: Any) -> Decision:
    """The principal's buckets, from this process's lease of their tokens: a round trip only
    when the lease is spent or has run out (see above). For cached reads, which are GETs."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    buckets = principal_buckets(principal)
    keys = tuple(bucket.key for bucket in buckets)
    now = time.monotonic()
    with _leases_lock:
        lease = _leases.get(keys)
        # The same buckets are the same tuple (`_principal_buckets` remembers them): `is` first.
        same = lease is not None and (lease.buckets is buckets or lease.buckets == buckets)
        if same and lease.unspent and now < lease.until:
            lease.unspent -= 1
            decision = lease.decision(now)
            attach(request, decision)
            return decision
        _leases.pop(keys, None)

    give_back, want = (0, 1) if lease is None else (lease.unspent, lease.next_want(now))
    args: list[Any] = [len(buckets), want, give_back, LEASE_SHARE]
    for bucket in buckets:
        args += [bucket.capacity, repr(float(bucket.per_second))]
    reply = _backend().run(_LEASE, keys, args)
    if reply is None:
        return _unchecked(request, fail_closed=False)
    taken, wait_ms, *rest = (int(value) for value in reply)
    LEASES.labels(outcome="taken" if taken else "refused").inc()
    if not taken:
        quotas, refused_by = _bucket_quotas(buckets, rest)
        decision = Decision(
            allowed=False,
            retry_after=max(_seconds(wait_ms), 1),
            quotas=tuple(quotas),
            refused_by=refused_by,
        )
        attach(request, decision)
        return decision

    lease = _Lease(
        buckets=buckets,
        granted=taken,
        unspent=taken - 1,  # this request's
        left=tuple(rest[0::2]),
        taken_at=now,
        until=now + settings.RATELIMIT_LEASE_SECONDS,
    )
    with _leases_lock:
        if len(_leases) >= LEASES_KEPT:
            _leases.clear()
        _leases[keys] = lease
    decision = lease.decision(now)
    attach(request, decision)
    return decision


def limit_anonymous_request(request: Any) -> Decision:
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    return enforce(request, anonymous_buckets(_http_request(request)))


class PublicScope(StrEnum):
    """The public endpoints, each with the limits of its own besides the address's."""

    SIGN_IN = "sign-in"
    SIGNUP = "signup"
    REFRESH = "refresh"
    PASSWORD_RESET = "password-reset"  # noqa: S105  (a name, not a secret)
    OTHER = "other"


def _auth_address_bucket(address: str) -> TokenBucket:
    capacity, per_second = rate(settings.RATELIMIT_AUTH_RATE)
    return TokenBucket(_key("auth", address), capacity, per_second, "this address")


def sign_in_windows(address: str, account: str | None) -> list[FailureWindow]:
    """Failed sign-ins: per (address, account), per address across accounts (credential
    stuffing) and per account across addresses (one account attacked from many)."""
    window, lockout = settings.LOGIN_FAILURE_WINDOW_SECONDS, settings.LOGIN_LOCKOUT_SECONDS
    windows = []
    if account:
        hashed = account_key(account)
        windows.append(
            FailureWindow(
                _key("login-fail", "pair", address, hashed),
                settings.LOGIN_FAILURE_LIMIT,
                window,
                lockout,
                "failed sign-ins to this account from this address",
            )
        )
    windows.append(
        FailureWindow(
            _key("login-fail", "address", address),
            settings.LOGIN_ADDRESS_FAILURE_LIMIT,
            window,
            lockout,
            "failed sign-ins from this address",
        )
    )
    if account:
        windows.append(
            FailureWindow(
                _key("login-fail", "account", account_key(account)),
                settings.LOGIN_ACCOUNT_FAILURE_LIMIT,
                window,
                lockout,
                "failed sign-ins to this account",
            )
        )
    return windows


def limit_public_request(request: Any, *, scope: PublicScope, account: str | None) -> Decision:
    """A public endpoint's limits, checked before its body is validated, so that a refused
    request costs no password hash. `account` is the email (or, for refresh, the user id) the
    request names, when it names one."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    address = address_key(client_ip(_http_request(request)))
    buckets = [_auth_address_bucket(address)]
    windows: list[FailureWindow] = []
    if scope is PublicScope.SIGN_IN:
        windows = sign_in_windows(address, account)
    elif scope is PublicScope.SIGNUP:
        capacity, per_second = rate(settings.RATELIMIT_SIGNUP_RATE)
        buckets.append(
            TokenBucket(_key("signup", address), capacity, per_second, "signups from this address")
        )
    elif scope is PublicScope.REFRESH and account:
        capacity, per_second = rate(settings.RATELIMIT_REFRESH_RATE)
        buckets.append(
            TokenBucket(_key("refresh", account), capacity, per_second, "refreshes of this user")
        )
    elif scope is PublicScope.PASSWORD_RESET and account:
        capacity, per_second = rate(settings.RATELIMIT_PASSWORD_RESET_RATE)
        buckets.append(
            TokenBucket(
                _key("reset", account_key(account)),
                capacity,
                per_second,
                "password resets of this account",
            )
        )
    return enforce(request, buckets, windows)


def sign_in_failed(request: Any, *, account: str | None) -> None:
    """Count a failed sign-in against the pair, the address and the account."""
    if not settings.RATELIMIT_ENABLED:
        return
    address = address_key(client_ip(_http_request(request)))
    record_failures(request, sign_in_windows(address, account))


def sign_in_succeeded(request: Any, *, account: str | None) -> None:
    """A success clears the pair's failures, and only those: other addresses' failures against
    the account, and this address's against other accounts, still count."""
    decision = decision_of(request)
    if not settings.RATELIMIT_ENABLED or not account or decision is None:
        return
    # The pair's count was read by the check: most sign-ins have nothing to clear, and no round
    # trip is spent on them.
    if decision.failures and decision.failures[0] > 0:
        address = address_key(client_ip(_http_request(request)))
        pair = sign_in_windows(address, account)[0]
        forget_failures(pair)
        # The headers then state the pair as it is now: nothing counted.
        quotas = list(decision.quotas)
        quotas[len(quotas) - len(decision.failures)] = Quota(pair.limit, pair.limit, 0)
        attach(
            request,
            Decision(allowed=True, quotas=tuple(quotas), failures=(0, *decision.failures[1:])),
        )


# --- DRF and Django hooks ----------------------------------------------------------------------


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
    return settings.RATELIMIT_ENABLED and request.path.startswith(API_PATH_PREFIX)


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


# --- OpenAPI -----------------------------------------------------------------------------------

_HEADER_COMPONENTS: dict[str, dict[str, Any]] = {
    LIMIT_HEADER: {
        "description": "Requests that may be sent at once: the size of the bucket this response "
        "reports on (the one closest to running out).",
        "schema": {"type": "integer", "minimum": 0},
    },
    REMAINING_HEADER: {
        "description": "Requests left in that bucket now.",
        "schema": {"type": "integer", "minimum": 0},
    },
    RESET_HEADER: {
        "description": "Seconds until that bucket is full again (0 when it is).",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def add_rate_limit_headers(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every response of every operation states the
    RateLimit-* headers, declared once as components."""
    components = result.setdefault("components", {})
    components.setdefault("headers", {}).update(_HEADER_COMPONENTS)
    refs = {name: {"$ref": f"#/components/headers/{name}"} for name in _HEADER_COMPONENTS}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict) and "$ref" not in response:
                    # A new dict: operations may share their headers' dict with each other.
                    response["headers"] = {**response.get("headers", {}), **refs}
    return result
