"""`Authorization: Api-Key <key>`: a machine acting in its key's tenant, with its key's codes."""

from collections.abc import Sequence
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts import apikeys
from core.problems import Problem, ProblemType
from tenants.authentication import act_for_request
from tenants.principal import Principal

KEYWORD = b"api-key"
# One answer for every way a key can be wrong: unknown, malformed, tampered, expired, revoked,
# of a deleted tenant. Nothing tells them apart.
INVALID_KEY = "Invalid API key."


def principal_from_api_key(key: str) -> Principal:
    """Verify an API key and resolve what it may do, in which tenant.

    Every failure is the same AuthenticationFailed (401); a suspended tenant is a 403
    `tenant-suspended`, as for people. On a warm cache it runs no SQL.
    """
    principal, _ = verify_api_key(key)
    return principal


def verify_api_key(key: str, *, read_ahead: Sequence[str] = ()) -> tuple[Principal, dict[str, Any]]:
    """`principal_from_api_key`, with the values of the `read_ahead` keys of the tenant's cache
    that were found, read in the same round trip as the key (tenants/api/cached_reads.py)."""
    prefix = apikeys.parse_prefix(key)
    if prefix is None:
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    records, ahead = apikeys.records_for_prefix(prefix, read_ahead=read_ahead)
    record = next((r for r in records if apikeys.hash_matches(key, r.key_hash)), None)
    if record is None:
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    api_key, tenant = record.api_key, record.tenant
    if (
        api_key.revoked_at is not None
        or (api_key.expires_at is not None and api_key.expires_at <= timezone.now())
        or tenant.deleted_at is not None
    ):
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    if not tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    return Principal(tenant=tenant, permissions=record.permissions, api_key=api_key), ahead


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key sk_live_…`. `request.user` is None: a key is not a person."""

    www_authenticate_realm = "api"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(INVALID_KEY) from exc
        principal = principal_from_api_key(key)
        act_for_request(principal)
        apikeys.mark_used(principal.api_key.id)
        return None, principal

    def authenticate_header(self, request) -> str:
        return f'Api-Key realm="{self.www_authenticate_realm}"'
