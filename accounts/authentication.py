"""`Authorization: Api-Key <key>`: a machine acting in its key's tenant, with its key's codes."""

from collections.abc import Sequence
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts import apikeys
from kernel.authentication import act_for_request
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType

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
    that were found, read in the same round trip as the key (kernel/api/cached_reads.py)."""
    prefix = apikeys.parse_prefix(key)
    if prefix is None:
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    records, ahead = apikeys.records_for_prefix(prefix, read_ahead=read_ahead)
    return checked_key_principal(matching_principal(key, records)), ahead


def matching_principal(key: str, records: Sequence[apikeys.KeyRecord]) -> Principal:
    """The principal of the record whose hash the key matches, if the key was ever valid: not
    revoked, its tenant not deleted (a 401 otherwise). What can change with time alone is left
    to `checked_key_principal`."""
    record = next((r for r in records if apikeys.hash_matches(key, r.key_hash)), None)
    if record is None or record.api_key.revoked_at is not None or record.tenant.deleted_at:
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    return Principal(tenant=record.tenant, permissions=record.permissions, api_key=record.api_key)


def checked_key_principal(principal: Principal) -> Principal:
    """The key's principal, if it may act now: not expired (401), its tenant not suspended
    (403 `tenant-suspended`, as for people)."""
    expires_at = principal.api_key.expires_at
    if expires_at is not None and expires_at <= timezone.now():
        raise exceptions.AuthenticationFailed(INVALID_KEY)
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    return principal


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
