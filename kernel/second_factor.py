"""A person's second factor, as every place that checks a password asks about it.

The factor itself (TOTP and recovery codes) belongs to the accounts feature, which registers it
here from its `AppConfig.ready()`; the places that sign a person in with a password (the API's
token endpoint, the OAuth sign-in page, the admin) ask the kernel, so that no feature imports
another and none can forget to ask: with nothing registered, nobody has a second factor.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SecondFactor:
    # Whether the person must give a code after their password.
    is_active: Callable[[Any], bool]
    # Whether a code (spent if right) is the person's second factor now.
    verify: Callable[[Any, str], bool]
    # The secret waiting for confirmation, or a new one: {"secret", "otpauth_url", "qr_svg"}.
    begin: Callable[[Any], dict[str, str]]
    # Put the new secret in force with a first code: the recovery codes; InvalidInput if the
    # code is wrong.
    confirm: Callable[[Any, str], list[str]]


_registered: list[SecondFactor] = []


def register(factor: SecondFactor) -> None:
    _registered[:] = [factor]


def required(user: Any) -> bool:
    return any(factor.is_active(user) for factor in _registered)


def verify(user: Any, code: str) -> bool:
    return any(factor.verify(user, code) for factor in _registered)


def begin(user: Any) -> dict[str, str]:
    return _the_factor().begin(user)


def confirm(user: Any, code: str) -> list[str]:
    return _the_factor().confirm(user, code)


def _the_factor() -> SecondFactor:
    if not _registered:
        raise LookupError("No second factor is registered.")
    return _registered[0]
