"""`Authorization: Bearer <access token>`: a person acting in the one tenant the token names.

The credential type of a sign-in's access tokens (kernel/credentials.py): it resolves the tenant
and the principal once per request, from the token alone.
"""

import datetime
import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token

from accounts.sessions import SESSION_CLAIM, SSO_CLAIM, TENANT_CLAIM
from kernel import credentials, principals, ratelimit
from kernel.api import cached_reads
from kernel.api.cached_reads import CachedRead
from kernel.principals import Principal, Resolved, resolve_principal
from kernel.problems import Problem, ProblemType
from kernel.redis import cache_identity

INVALID_TOKEN = "Invalid token."  # noqa: S105  (a message, not a secret)


def principal_from_access_token(raw_token: bytes | str) -> Principal:
    """Verify an access token and resolve who it speaks for, in which tenant.

    Every failure is the same AuthenticationFailed (401), so a caller learns nothing about which
    check failed; a suspended tenant is a 403 `tenant-suspended`, which tells the caller what to
    do. Every surface reaches it through the credential registry. On a warm cache it runs no SQL.
    """
    principal, _ = verify_access_token(raw_token)
    return principal


def verify_access_token(
    raw_token: bytes | str, *, read_ahead: Sequence[str] = ()
) -> tuple[Principal, dict[str, Any]]:
    """`principal_from_access_token`, with the values of the `read_ahead` keys of the tenant's
    cache that were found, read in the same round trip as the principal."""
    claims = access_claims(raw_token.encode() if isinstance(raw_token, str) else raw_token)
    resolved = resolve_principal(
        tenant_id=claims.tenant_id,
        user_id=claims.user_id,
        session_id=claims.session_id,
        read_ahead=read_ahead,
    )
    principal = checked_principal(resolved, claims)
    return replace(principal, claims=dict(claims.token.payload)), resolved.read_ahead


@dataclass(frozen=True, slots=True)
class AccessClaims:
    token: Token
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    session_id: str
    sso: bool


def access_claims(raw_token: bytes) -> AccessClaims:
    """The verified token and who it names: a 401 for any token that is not a valid access
    token of ours."""
    return _claims_of(validated_access_token(raw_token))


# A verified token is one object for as long as it is remembered (`_verified_token`): who it
# names is read from it once, not on every request.
@functools.lru_cache(maxsize=4096)
def _claims_of(token: Token) -> AccessClaims:
    try:
        return AccessClaims(
            token=token,
            tenant_id=uuid.UUID(token[TENANT_CLAIM]),
            user_id=uuid.UUID(str(token["user_id"])),
            session_id=str(token[SESSION_CLAIM]),
            sso=token.get(SSO_CLAIM) is True,
        )
    except (KeyError, ValueError) as exc:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN) from exc


def checked_principal(resolved: Resolved, claims: AccessClaims) -> Principal:
    """The resolved principal, if the token may still act as it: a member still, active, with
    the password the token was issued under, in a live tenant (401), not suspended (403)."""
    principal = resolved.principal
    if (
        principal is None
        or not principal.user.is_active
        or claims.token.get("pwd") != resolved.password_digest
        or principal.tenant.deleted_at is not None
    ):
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    # The principal is the member's, shared by their sessions; how this one began is the token's.
    return replace(principal, sso=True) if claims.sso else principal


# Access tokens whose signature and claims were verified, remembered per process by their bytes:
# PyJWT's checks cost more than all the rest of a cached read. A token's signature cannot become
# invalid later (the key is part of the memory's key); what can change is checked on every use:
# its expiry here, its session and the member's password by `resolve_principal`. Tokens that
# fail are not remembered; the memory is bounded, the least recently used go first.
VERIFIED_TOKENS_SIZE = 4096


def validated_access_token(raw_token: bytes) -> Token:
    """simplejwt's validated token for `raw_token`, or its InvalidToken (401)."""
    keys = (jwt_settings.ALGORITHM, jwt_settings.SIGNING_KEY, jwt_settings.VERIFYING_KEY)
    token = _verified_token(raw_token, keys)
    if token.payload.get("exp", 0) <= time.time() - _leeway_seconds():
        # Expired since it was verified: simplejwt says so in its own words.
        return JWTAuthentication().get_validated_token(raw_token)
    return token


@functools.lru_cache(maxsize=VERIFIED_TOKENS_SIZE)
def _verified_token(raw_token: bytes, keys: tuple) -> Token:
    return JWTAuthentication().get_validated_token(raw_token)


def _leeway_seconds() -> float:
    leeway = jwt_settings.LEEWAY
    return leeway.total_seconds() if isinstance(leeway, datetime.timedelta) else float(leeway)


def verify(credential: bytes) -> Principal:
    """The credential type's check of `Bearer <access token>`."""
    return principal_from_access_token(credential)


def read_cached(
    request: HttpRequest, raw_token: bytes, read: CachedRead, permission: str
) -> tuple[Principal, Any] | None:
    """A person's cached read (kernel/api/cached_reads.py)."""
    claims = access_claims(raw_token)
    known = principals.remembered(claims.tenant_id, claims.user_id)
    if known is None:
        resolved = resolve_principal(
            tenant_id=claims.tenant_id,
            user_id=claims.user_id,
            session_id=claims.session_id,
            read_ahead=[read.version_key],
        )
        principal = checked_principal(resolved, claims)
        principals.remember(claims.tenant_id, claims.user_id, resolved)
        return cached_reads.limited_read(request, principal, resolved.read_ahead, read, permission)

    # Whether the principal this process resolved last still holds (the tenant's epoch, the
    # session's revocation mark), and the version: from the process's tracked keys, which Redis
    # keeps exact (kernel/tracked.py); the rate limit's tokens from the process's lease. Most hits
    # ask Redis nothing. Without tracking, one round trip: they are read with the tokens taken.
    principal = checked_principal(known, claims)
    if not principal.has_permission(permission):
        return None
    namespace = cache_identity()
    names = (*principals.freshness_names(claims.session_id), read.version_key)
    keys = cached_reads.raw_keys(claims.tenant_id, names, namespace)
    values = cached_reads.tracked_values(keys)
    if values is None:
        decision, values = cached_reads.limited_values(request, principal, keys)
    else:
        decision = ratelimit.limit_principal_leased(request, principal)
    if not decision.allowed or values is None:
        return None
    if not principals.still_current(known, values[:2]):
        principals.forget(claims.tenant_id, claims.user_id)
        return None
    if values[2] is None:
        return None
    stored = cached_reads.stored_entry(request, claims.tenant_id, read, values[2], namespace)
    return None if stored is None else (principal, stored)


CREDENTIAL_TYPE = credentials.CredentialType(
    name="access_token",
    scheme=jwt_settings.AUTH_HEADER_TYPES[0],
    # simplejwt matches its header type as written.
    case_sensitive=True,
    verify=verify,
    malformed=exceptions.AuthenticationFailed(
        _("Authorization header must contain two space-delimited values"),
        code="bad_authorization_header",
    ),
    openapi_name="bearerAuth",
    openapi_definition={"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    read_cached=read_cached,
    # A JWT: three dot-separated parts. Any other `Bearer` value is another type's (OAuth).
    recognizes=lambda credential: credential.count(b".") == 2,
)
