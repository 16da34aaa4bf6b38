"""The public endpoints' limits (sign-in, signup, refresh, logout, password reset): the
address's bucket for them, and each endpoint's own bucket or windows."""

from enum import StrEnum
from typing import Any

from django.conf import settings

from kernel.clientip import client_ip
from kernel.ratelimit.buckets import (
    FailureWindow,
    TokenBucket,
    account_key,
    address_key,
    rate,
    redis_key,
)
from kernel.ratelimit.checks import enforce
from kernel.ratelimit.decisions import UNCHECKED_DECISION, Decision, http_request
from kernel.ratelimit.sign_ins import is_known_pair, sign_in_windows


class PublicScope(StrEnum):
    """The public endpoints, each with the limits of its own besides the address's."""

    SIGN_IN = "sign-in"
    SIGNUP = "signup"
    REFRESH = "refresh"
    PASSWORD_RESET = "password-reset"  # noqa: S105  (a name, not a secret)
    OTHER = "other"


def _auth_address_bucket(address: str) -> TokenBucket:
    capacity, per_second = rate(settings.RATELIMIT_AUTH_RATE)
    return TokenBucket(redis_key("auth", address), capacity, per_second, "this address")


def limit_public_request(request: Any, *, scope: PublicScope, account: str | None) -> Decision:
    """A public endpoint's limits, checked before its body is validated, so that a refused
    request costs no password hash. `account` is the email (or, for refresh, the user id) the
    request names, when it names one."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    address = address_key(client_ip(http_request(request)))
    buckets = [_auth_address_bucket(address)]
    windows: list[FailureWindow] = []
    if scope is PublicScope.SIGN_IN:
        windows = sign_in_windows(address, account, known_pair=is_known_pair(address, account))
    elif scope is PublicScope.SIGNUP:
        capacity, per_second = rate(settings.RATELIMIT_SIGNUP_RATE)
        buckets.append(
            TokenBucket(
                redis_key("signup", address), capacity, per_second, "signups from this address"
            )
        )
        if account:
            capacity, per_second = rate(settings.RATELIMIT_SIGNUP_ACCOUNT_RATE)
            buckets.append(
                TokenBucket(
                    redis_key("signup-account", account_key(account)),
                    capacity,
                    per_second,
                    "signups with this email",
                )
            )
    elif scope is PublicScope.REFRESH and account:
        capacity, per_second = rate(settings.RATELIMIT_REFRESH_RATE)
        buckets.append(
            TokenBucket(
                redis_key("refresh", account), capacity, per_second, "refreshes of this user"
            )
        )
    elif scope is PublicScope.PASSWORD_RESET and account:
        capacity, per_second = rate(settings.RATELIMIT_PASSWORD_RESET_RATE)
        buckets.append(
            TokenBucket(
                redis_key("reset", account_key(account)),
                capacity,
                per_second,
                "password resets of this account",
            )
        )
    return enforce(request, buckets, windows)
