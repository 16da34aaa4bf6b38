"""Single-use tickets kept in the cache: a random token handed out, its digest the key, a small
payload the value, for a few minutes. The cache's delete says which request removed an entry, so
that of two requests presenting the same token, at most one spends it.

Used by the second step of a sign-in (`accounts/mfa/challenges.py`) and by single sign-on
(`accounts/sso/flows.py`).
"""

import hashlib
import secrets
from typing import Any

from django.core.cache import cache

from kernel.context import no_tenant

# Longer than anything we hand out: what is longer is not ours, and is not hashed.
MAX_TOKEN_LENGTH = 128


def issue(kind: str, payload: dict[str, Any], *, seconds: int) -> str:
    """A new ticket for `payload`: its token (256 random bits)."""
    token = secrets.token_urlsafe(32)
    issue_as(kind, token, payload, seconds=seconds)
    return token


def issue_as(kind: str, token: str, payload: dict[str, Any], *, seconds: int) -> None:
    """A ticket under a token made elsewhere, as unguessable as ours (a protocol's own)."""
    with no_tenant():
        cache.set(_key(kind, token), payload, timeout=seconds)


def peek(kind: str, token: object) -> dict[str, Any] | None:
    """The payload while the ticket is live; None for a token that is not one of ours, has
    expired or was spent."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    with no_tenant():
        found = cache.get(_key(kind, token))
    return found if isinstance(found, dict) else None


def spend(kind: str, token: str) -> bool:
    """Whether this call is the one that spent `token` (at most one is)."""
    with no_tenant():
        return bool(cache.delete(_key(kind, token)))


def take(kind: str, token: object) -> dict[str, Any] | None:
    """The payload, spent by this call; None if it was not live or another call spent it."""
    found = peek(kind, token)
    if found is None or not spend(kind, token):  # type: ignore[arg-type]  (a live token is a str)
        return None
    return found


def _key(kind: str, token: str) -> str:
    return f"{kind}:{hashlib.sha256(token.encode()).hexdigest()}"
