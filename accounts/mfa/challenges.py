"""A sign-in waiting for its second factor: the password was right, the code is still to come.

The `mfa_token` handed out for it is a single-use ticket (accounts/one_time.py) that lives for
MFA_CHALLENGE_SECONDS (5 minutes), with the user and tenant it signs in to. It may be tried again
after a wrong code (wrong codes count toward the sign-in lockout instead), and is spent by the
first right one, so that two requests with the same token cannot both get tokens.
"""

import uuid
from dataclasses import dataclass

from django.conf import settings

from accounts import one_time

KIND = "mfa-challenge"


@dataclass(frozen=True)
class Challenge:
    user_id: uuid.UUID
    tenant_id: uuid.UUID


def issue(*, user_id: uuid.UUID, tenant_id: uuid.UUID) -> str:
    return one_time.issue(
        KIND,
        {"user": str(user_id), "tenant": str(tenant_id)},
        seconds=settings.MFA_CHALLENGE_SECONDS,
    )


def pending(token: str) -> Challenge | None:
    """The sign-in `token` stands for, while it is pending; None when it is not one of ours, has
    expired or was spent."""
    found = one_time.peek(KIND, token)
    if found is None:
        return None
    return Challenge(user_id=uuid.UUID(found["user"]), tenant_id=uuid.UUID(found["tenant"]))


def spend(token: str) -> bool:
    """Whether this call is the one that spent `token` (at most one is)."""
    return one_time.spend(KIND, token)
