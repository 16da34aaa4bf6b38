"""`Authorization: Api-Key <key>`: a machine acting in its key's tenant, with its key's codes."""

import functools
from collections.abc import Sequence
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions

from accounts import apikeys
from kernel import credentials, principals, ratelimit
from kernel.api import cached_reads
from kernel.api.cached_reads import CachedRead
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from kernel.redis import cache_identity

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


def verify(credential: bytes) -> Principal:
    """The credential type's check of `Api-Key <key>`: the key's principal, or a 401."""
    try:
        key = credential.decode("ascii")
    except UnicodeDecodeError as exc:
        raise exceptions.AuthenticationFailed(INVALID_KEY) from exc
    return principal_from_api_key(key)


def read_cached(
    request: HttpRequest, credential: bytes, read: CachedRead, permission: str
) -> tuple[Principal, Any] | None:
    """An API key's cached read (kernel/api/cached_reads.py): as a person's, from tracked keys
    and a lease once the process knows the key's tenant and the key's snapshot is in the cache;
    else the usual look-up (the snapshot and the version in one round trip), then the rate
    limit's tokens and the entry in one more."""
    key = credential.decode("ascii")
    prefix = apikeys.parse_prefix(key)
    tenant_id = apikeys.tenant_of_prefix(prefix) if prefix is not None else None
    if tenant_id is not None:
        namespace = cache_identity()
        names = (*apikeys.cached_names(prefix), read.version_key)
        values = cached_reads.tracked_values(cached_reads.raw_keys(tenant_id, names, namespace))
        principal = None
        if values is not None and None not in values:
            principal = _machine_principal(key, values[0], values[1])
        if principal is not None:
            principal = checked_key_principal(principal)
            if not principal.has_permission(permission):
                return None
            if not ratelimit.limit_principal_leased(request, principal).allowed:
                return None
            stored = cached_reads.stored_entry(request, tenant_id, read, values[2], namespace)
            return None if stored is None else (principal, stored)
    principal, read_ahead = verify_api_key(key, read_ahead=[read.version_key])
    return cached_reads.limited_read(request, principal, read_ahead, read, permission)


# The same bytes come back on every request until the epoch or the snapshot changes: the key is
# checked against them once (its hash, revocation, its tenant), not on every request. A key that
# fails raises, and is not remembered; expiry and suspension are checked on every use.
@functools.lru_cache(maxsize=4096)
def _machine_principal(key: str, raw_epoch: bytes, raw_snapshot: bytes) -> Principal | None:
    records = apikeys.records_from_cached(
        principals.decoded_token(raw_epoch), cache.client.decode(raw_snapshot)
    )
    return None if records is None else matching_principal(key, records)


def _mark_used(principal: Principal) -> None:
    apikeys.mark_used(principal.api_key.id)


CREDENTIAL_TYPE = credentials.CredentialType(
    name="api_key",
    scheme="Api-Key",
    verify=verify,
    malformed=exceptions.AuthenticationFailed(INVALID_KEY),
    openapi_name="apiKeyAuth",
    openapi_definition={
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Api-Key sk_live_…`: an API key of the tenant (docs/api-keys.md).",
    },
    read_cached=read_cached,
    used=_mark_used,
)
