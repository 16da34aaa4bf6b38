"""Failed sign-ins: counted per (address, account), per address and per account, in windows
that lock their key out at their limit; a success clears its own pair's count.

Every password check goes through these windows: the API's sign-in, the admin's sign-in, the
current password of a password change.

The account's window stops a password being guessed from many addresses, but it also lets anyone
lock an account out by failing against it from a handful of addresses. So a pair (address,
account) that signed in successfully in the last LOGIN_KNOWN_PAIR_DAYS is *known*, and the
account's window does not apply to it: the owner keeps signing in from where they did before,
while a stranger's guesses still lock the account for every other address. The trade-off: an
attacker behind the same address as the owner (one NAT, one office) inherits the exemption, and is
held back by the pair's and the address's windows alone (10 and 100 failures a window).
"""

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from kernel.clientip import client_ip
from kernel.ratelimit.backend import backend
from kernel.ratelimit.buckets import FailureWindow, account_key, address_key, redis_key
from kernel.ratelimit.checks import seconds
from kernel.ratelimit.decisions import Decision, Quota, attach, decision_of, http_request
from kernel.ratelimit.scripts import RECORD_FAILURE


def known_pair_key(address: str, account: str) -> str:
    return redis_key("login-known", address, account_key(account))


def is_known_pair(address: str, account: str | None) -> bool:
    return bool(account) and backend().exists(known_pair_key(address, account))


def sign_in_windows(
    address: str, account: str | None, *, known_pair: bool = False
) -> list[FailureWindow]:
    """Failed sign-ins: per (address, account), per address across accounts (credential
    stuffing) and per account across addresses (one account attacked from many), unless the
    pair is known (the module's docstring)."""
    window, lockout = settings.LOGIN_FAILURE_WINDOW_SECONDS, settings.LOGIN_LOCKOUT_SECONDS
    windows = []
    if account:
        hashed = account_key(account)
        windows.append(
            FailureWindow(
                redis_key("login-fail", "pair", address, hashed),
                settings.LOGIN_FAILURE_LIMIT,
                window,
                lockout,
                "failed sign-ins to this account from this address",
            )
        )
    windows.append(
        FailureWindow(
            redis_key("login-fail", "address", address),
            settings.LOGIN_ADDRESS_FAILURE_LIMIT,
            window,
            lockout,
            "failed sign-ins from this address",
        )
    )
    if account and not known_pair:
        windows.append(
            FailureWindow(
                redis_key("login-fail", "account", account_key(account)),
                settings.LOGIN_ACCOUNT_FAILURE_LIMIT,
                window,
                lockout,
                "failed sign-ins to this account",
            )
        )
    return windows


def record_failures(request: HttpRequest, windows: Sequence[FailureWindow]) -> None:
    """Count a failure in each window (one round trip). The request's decision, from a check of
    the same windows, is updated so that its headers count this failure too."""
    args: list[Any] = []
    for window in windows:
        args += [window.limit, window.window * 1000, window.lockout * 1000]
    reply = backend().run(RECORD_FAILURE, [w.key for w in windows], args)
    if reply is None:
        backend().unchecked("allowed")
        return
    counts = [int(value) for value in reply[0::2]]
    window_quotas = [
        Quota(window.limit, max(window.limit - count, 0), seconds(int(ttl_ms)))
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
    backend().delete(window.key)


def sign_in_failed(request: Any, *, account: str | None) -> None:
    """Count a failed sign-in against the pair, the address and the account."""
    if not settings.RATELIMIT_ENABLED:
        return
    address = address_key(client_ip(http_request(request)))
    record_failures(request, sign_in_windows(address, account))


def sign_in_succeeded(request: Any, *, account: str | None) -> None:
    """A success clears the pair's failures, and only those: other addresses' failures against
    the account, and this address's against other accounts, still count."""
    decision = decision_of(request)
    if not settings.RATELIMIT_ENABLED or not account or decision is None:
        return
    address = address_key(client_ip(http_request(request)))
    backend().mark(known_pair_key(address, account), settings.LOGIN_KNOWN_PAIR_DAYS * 86_400)
    # The pair's count was read by the check: most sign-ins have nothing to clear, and no round
    # trip is spent on them.
    if decision.failures and decision.failures[0] > 0:
        pair = sign_in_windows(address, account)[0]
        forget_failures(pair)
        # The headers then state the pair as it is now: nothing counted.
        quotas = list(decision.quotas)
        quotas[len(quotas) - len(decision.failures)] = Quota(pair.limit, pair.limit, 0)
        attach(
            request,
            Decision(allowed=True, quotas=tuple(quotas), failures=(0, *decision.failures[1:])),
        )
