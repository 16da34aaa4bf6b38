"""What a check is made of, and whose: token buckets and failure windows, their raw Redis keys,
and the buckets of a principal and of an anonymous address."""

import functools
import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from kernel.clientip import client_ip


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


def rate(value: tuple[int, int]) -> tuple[int, float]:
    """A `(requests, period seconds)` setting as a bucket's capacity and refill per second."""
    requests, period = value
    capacity = max(int(requests), 1)
    return capacity, capacity / max(int(period), 1)


# --- keys ------------------------------------------------------------------------------------


def redis_key(*parts: object) -> str:
    """A raw Redis key under RATELIMIT_KEY_PREFIX: the cache's KEY_FUNCTION does not apply."""
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
    # The salt is the module this was first written in (core/ratelimit.py, before the kernel was
    # named so): another would forget every count.
    return salted_hmac("core.ratelimit.account", account.strip().lower()).hexdigest()[:32]


# --- policies ----------------------------------------------------------------------------------


def anonymous_buckets(request: HttpRequest) -> list[TokenBucket]:
    capacity, per_second = rate(settings.RATELIMIT_ANONYMOUS_RATE)
    address = address_key(client_ip(request))
    return [TokenBucket(redis_key("anon", address), capacity, per_second, "this address")]


def principal_buckets(principal: Any) -> tuple[TokenBucket, ...]:
    """The tenant's bucket, from its plan, and the credential's share of it (an API key's, a
    third-party app's in the tenant, or a person's)."""
    tenant = principal.tenant
    plan = tenant.plan
    if principal.api_key is not None:
        credential = ("k", getattr(principal.api_key, "pk", None) or principal.api_key.id)
    elif principal.app is not None:
        # A third-party app has its own share, whoever it acts for: one app cannot spend its
        # users' own share, nor they its.
        credential = ("o", principal.app.pk)
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
