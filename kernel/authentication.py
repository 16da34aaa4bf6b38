"""Authentication that resolves the tenant: once per request, from the credential alone."""

import datetime
import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token

from kernel import audit
from kernel.principals import Principal, Resolved, resolve_principal
from kernel.problems import Problem, ProblemType
from kernel.sessions import SESSION_CLAIM, TENANT_CLAIM
from kernel.tenancy.context import enter_tenant_for_request
from kernel.tracing import bind_actor

INVALID_TOKEN = "Invalid token."  # noqa: S105  (a message, not a secret)


def principal_from_access_token(raw_token: bytes | str) -> Principal:
    """Verify an access token and resolve who it speaks for, in which tenant.

    Every failure is the same AuthenticationFailed (401), so a caller learns nothing about which
    check failed; a suspended tenant is a 403 `tenant-suspended`, which tells the caller what to
    do. Shared by HTTP (TenantJWTAuthentication) and WebSockets. On a warm cache it runs no SQL.
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
    return principal


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


class TenantJWTAuthentication(JWTAuthentication):
    """`Authorization: Bearer <access>`: a person acting in the one tenant the token names."""

    www_authenticate_realm = "api"

    def authenticate(self, request):
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        principal = principal_from_access_token(raw_token)
        act_for_request(principal)
        return principal.user, principal


def act_for_request(principal: Principal) -> None:
    """The rest of the request acts as `principal`: in its tenant's scope, with it as the actor
    of log lines and audit events."""
    enter_tenant_for_request(principal.tenant.id)
    if principal.api_key is not None:
        bind_actor(tenant_id=principal.tenant.id, api_key_id=principal.api_key.id)
        audit.set_request_actor(audit.Actor.api_key(principal.api_key))
    else:
        bind_actor(tenant_id=principal.tenant.id, user_id=principal.user.id)
        audit.set_request_actor(audit.Actor.user(principal.user))
