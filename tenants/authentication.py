"""Authentication that resolves the tenant: once per request, from the credential alone."""

import uuid
from dataclasses import replace

from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.sessions import SESSION_CLAIM, TENANT_CLAIM
from core.problems import Problem, ProblemType
from core.tracing import bind_actor
from tenants import audit
from tenants.context import enter_tenant_for_request
from tenants.principal import Principal
from tenants.principals import resolve_principal

INVALID_TOKEN = "Invalid token."  # noqa: S105  (a message, not a secret)


def principal_from_access_token(raw_token: bytes | str) -> Principal:
    """Verify an access token and resolve who it speaks for, in which tenant.

    Every failure is the same AuthenticationFailed (401), so a caller learns nothing about which
    check failed; a suspended tenant is a 403 `tenant-suspended`, which tells the caller what to
    do. Shared by HTTP (TenantJWTAuthentication) and WebSockets. On a warm cache it runs no SQL.
    """
    token = JWTAuthentication().get_validated_token(
        raw_token.encode() if isinstance(raw_token, str) else raw_token
    )
    try:
        tenant_id = uuid.UUID(token[TENANT_CLAIM])
        user_id = uuid.UUID(str(token["user_id"]))
        session_id = str(token[SESSION_CLAIM])
    except (KeyError, ValueError) as exc:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN) from exc

    resolved = resolve_principal(tenant_id=tenant_id, user_id=user_id, session_id=session_id)
    principal = resolved.principal
    if (
        principal is None
        or not principal.user.is_active
        or token.get("pwd") != resolved.password_digest
        or principal.tenant.deleted_at is not None
    ):
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    return replace(principal, claims=dict(token.payload))


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
        enter_tenant_for_request(principal.tenant.id)
        bind_actor(tenant_id=principal.tenant.id, user_id=principal.user.id)
        audit.set_request_actor(audit.Actor.user(principal.user))
        return principal.user, principal
