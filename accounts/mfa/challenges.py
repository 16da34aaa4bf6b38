"""A sign-in waiting for its second factor: the password was right, the code is still to come.

The `mfa_token` handed out for it is random (256 bits) and kept in the cache under its digest,
for MFA_CHALLENGE_SECONDS (5 minutes), with the user and tenant it signs in to. It may be tried
again after a wrong code (wrong codes count toward the sign-in lockout instead), and is spent
by the first right one: the cache's delete says which request removed it, so that two requests
with the same token cannot both get tokens.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from kernel.context import no_tenant


@dataclass(frozen=True)
class Challenge:
    user_id: uuid.UUID
    tenant_id: uuid.UUID


def issue(*, user_id: uuid.UUID, tenant_id: uuid.UUID) -> str:
    token = secrets.token_urlsafe(32)
    with no_tenant():
        cache.set(
            _key(token),
            {"user": str(user_id), "tenant": str(tenant_id)},
            timeout=settings.MFA_CHALLENGE_SECONDS,
        )
    return token


def pending(token: str) -> Challenge | None:
    """The sign-in `token` stands for, while it is pending; None when it is not one of ours, has
    expired or was spent."""
    if not isinstance(token, str) or not token or len(token) > 128:
        return None
    with no_tenant():
        found = cache.get(_key(token))
    if not isinstance(found, dict):
        return None
    return Challenge(user_id=uuid.UUID(found["user"]), tenant_id=uuid.UUID(found["tenant"]))


def spend(token: str) -> bool:
    """Whether this call is the one that spent `token` (at most one is)."""
    with no_tenant():
        return bool(cache.delete(_key(token)))


def _key(token: str) -> str:
    return f"mfa-challenge:{hashlib.sha256(token.encode()).hexdigest()}"
