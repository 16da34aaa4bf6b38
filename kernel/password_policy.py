"""Whether a person may sign in to a tenant with their password, as every place that checks one
asks before a session or a grant comes of it.

A tenant that signs its people in through its own identity provider (accounts/sso/) can refuse
passwords for them. The accounts feature registers that rule here from its `AppConfig.ready()`;
the places that sign a person in to a tenant with a password (the API's token endpoints, the
OAuth consent) ask the kernel, so that no feature imports another. With nothing registered, a
password is enough.
"""

from collections.abc import Callable
from typing import Any

# (user, tenant, via, record) → why the password is not enough there, or None. `via` names the
# place asking ("api", "oauth"); `record` says that a session or grant follows if allowed, for
# the audit log.
Refusal = Callable[[Any, Any, str, bool], str | None]

_registered: list[Refusal] = []


def register(refusal: Refusal) -> None:
    _registered[:] = [refusal]


def refusal(*, user: Any, tenant: Any, via: str, record: bool = True) -> str | None:
    for rule in _registered:
        reason = rule(user, tenant, via, record)
        if reason is not None:
            return reason
    return None
