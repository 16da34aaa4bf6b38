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
process answers from memory take their tokens from leases instead: a round trip per lease, not
per request. The clock is Redis's `TIME`, so that every process agrees on it. Keys are raw Redis
keys, named here in full under RATELIMIT_KEY_PREFIX: the cache's KEY_FUNCTION does not apply to
them.

Each check leaves its `Decision` on the request; `RateLimitMiddleware` writes the RateLimit-*
headers from it on every API response and checks the anonymous bucket for responses that no
view limited.

If Redis cannot be reached, nothing raises: the request is served without a limit (a safe
method always; a write unless RATELIMIT_FAIL_OPEN_WRITES is false, then it is a 503), the
failure is counted in `tenantapi_ratelimit_unchecked_total` and logged at most once a minute, and
Redis is left alone for RATELIMIT_BACKEND_RETRY_SECONDS, so that an outage does not add a timeout
to every request.

The modules, each importing only those above it:

- `decisions`: what a check decided, on the request, in the headers, as a 429;
- `buckets`: token buckets and failure windows, their keys, a principal's and an address's;
- `scripts`: the Lua scripts;
- `backend`: the Redis they run on, and what an outage does;
- `checks`: a check, and the checks of an API request by who is calling;
- `leases`: a process's share of a principal's buckets, for cached reads;
- `sign_ins`: failed sign-ins' windows;
- `public`: the public endpoints' limits;
- `middleware`: the DRF throttle and the middleware that writes the headers;
- `openapi`: the headers in the OpenAPI document.

Everything callers use is importable from here, as `kernel.ratelimit.<name>`.
"""

from kernel.ratelimit.backend import FAILURE_LOG_SECONDS, UNCHECKED
from kernel.ratelimit.buckets import (
    FailureWindow,
    TokenBucket,
    account_key,
    address_key,
    anonymous_buckets,
    principal_buckets,
    rate,
)
from kernel.ratelimit.checks import (
    SAFE_METHODS,
    check,
    check_with,
    enforce,
    limit_anonymous_request,
    limit_api_request,
    limit_principal_with,
)
from kernel.ratelimit.decisions import (
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    RETRY_AFTER_HEADER,
    UNCHECKED_DECISION,
    Decision,
    Quota,
    apply_headers,
    attach,
    decision_of,
    rate_limited,
)
from kernel.ratelimit.leases import LEASE_SHARE, LEASES, LEASES_KEPT, limit_principal_leased
from kernel.ratelimit.middleware import (
    API_PATH_PREFIX,
    AnonymousAddressThrottle,
    RateLimitMiddleware,
)
from kernel.ratelimit.openapi import add_rate_limit_headers
from kernel.ratelimit.public import PublicScope, limit_public_request
from kernel.ratelimit.sign_ins import (
    forget_failures,
    record_failures,
    sign_in_failed,
    sign_in_succeeded,
    sign_in_windows,
)

__all__ = [
    "API_PATH_PREFIX",
    "FAILURE_LOG_SECONDS",
    "LEASES",
    "LEASES_KEPT",
    "LEASE_SHARE",
    "LIMIT_HEADER",
    "REMAINING_HEADER",
    "RESET_HEADER",
    "RETRY_AFTER_HEADER",
    "SAFE_METHODS",
    "UNCHECKED",
    "UNCHECKED_DECISION",
    "AnonymousAddressThrottle",
    "Decision",
    "FailureWindow",
    "PublicScope",
    "Quota",
    "RateLimitMiddleware",
    "TokenBucket",
    "account_key",
    "add_rate_limit_headers",
    "address_key",
    "anonymous_buckets",
    "apply_headers",
    "attach",
    "check",
    "check_with",
    "decision_of",
    "enforce",
    "forget_failures",
    "limit_anonymous_request",
    "limit_api_request",
    "limit_principal_leased",
    "limit_principal_with",
    "limit_public_request",
    "principal_buckets",
    "rate",
    "rate_limited",
    "record_failures",
    "sign_in_failed",
    "sign_in_succeeded",
    "sign_in_windows",
]
