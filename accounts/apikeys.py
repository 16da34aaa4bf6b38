"""API key secrets: their format, their hash, their cached look-up and when they were last used.

A key reads `sk_live_<prefix>_<secret>`: the prefix is 12 random letters and digits, stored in
clear so that a key can be found before its tenant is known; the secret is 32 random bytes
(`secrets.token_urlsafe`). The database keeps an HMAC-SHA256 of the whole key under a key derived
from SECRET_KEY (Django's `salted_hmac`): a high-entropy secret needs no slow hash, and a stolen
table without SECRET_KEY cannot even be checked against a guess. Hashes made under a key in
SECRET_KEY_FALLBACKS still verify, so SECRET_KEY can be rotated the way Django rotates it.

The look-up is cached like a person's principal (kernel/principals.py): one `get_many` in the
tenant's cache namespace reads the tenant's access epoch and the key's snapshot, which is
trusted only if it was built under that epoch, and for `SNAPSHOT_SECONDS` at most. Revoking a key
and anything else that changes access in the tenant bump the epoch on commit, so every process
refuses a revoked key from its next request. Which tenant a prefix belongs to never changes, so
each process remembers it after the first look-up; until then, and whenever Redis is down, the
look-up reads the database (in operator scope: row-level security hides the rows otherwise).

`last_used_at` is not written per request: each use marks the key in the platform cache, and the
beat job `api_key_last_used_flush_task` writes the marks to the database once a minute.
"""

import hmac
import secrets
import string
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache, caches
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import ApiKey
from kernel.context import operator_scope, tenant_context
from kernel.principals import EPOCH_KEY, tenant_from_snapshot, tenant_snapshot
from kernel.redis import REDIS_ERRORS
from kernel.tenancy.models import Permission, Tenant

log = structlog.get_logger(__name__)

KEY_SCHEME = "sk_live"
PREFIX_LENGTH = 12
_PREFIX_ALPHABET = string.ascii_letters + string.digits
SECRET_BYTES = 32
_HASH_SALT = "accounts.apikeys.key_hash"
# How long a snapshot may be served: the bound on staleness for anything the epoch misses.
SNAPSHOT_SECONDS = 5
# A use is marked at most this often per key and process; the flush runs every minute.
MARK_INTERVAL_SECONDS = 10
# How long a mark waits for the flush before it is dropped (the flush runs every minute).
MARK_TTL_SECONDS = 7 * 24 * 60 * 60
_TENANT_MEMORY_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str  # shown to its creator once, never stored
    prefix: str
    key_hash: str


def generate() -> NewKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewKey(key=key, prefix=prefix, key_hash=key_hash(key))


def parse_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else None. The secret may itself contain `_`."""
    parts = key.split("_", 3)
    if len(parts) != 4 or f"{parts[0]}_{parts[1]}" != KEY_SCHEME or not parts[3]:
        return None
    prefix = parts[2]
    if len(prefix) != PREFIX_LENGTH or not all(c in _PREFIX_ALPHABET for c in prefix):
        return None
    return prefix


def key_hash(key: str, *, secret: str | None = None) -> str:
    return salted_hmac(
        _HASH_SALT, key, secret=secret or settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()


def hash_matches(key: str, stored: str) -> bool:
    """Constant-time, under SECRET_KEY or any of its fallbacks."""
    matched = False
    for secret in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())):
        # No early exit: the time taken does not depend on which secret matched.
        matched |= hmac.compare_digest(key_hash(key, secret=secret), stored)
    return matched


# --- the cached look-up --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What authentication needs of a key, rebuilt from a snapshot: read it, never save it."""

    api_key: ApiKey
    key_hash: str
    permissions: frozenset[str]

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant


# prefix -> tenant id: fixed for the life of a key, so safe to remember in the process.
_tenant_of_prefix: dict[str, uuid.UUID] = {}


def _snapshot_key(prefix: str) -> str:
    # 2: the tenant's settings travel as JSON text (kernel.principals.tenant_snapshot).
    return f"api-key:2:{prefix}"


def records_for_prefix(
    prefix: str, *, read_ahead: Sequence[str] = ()
) -> tuple[list[KeyRecord], dict[str, Any]]:
    """The keys with this prefix (almost always one, or none), from the cache when it is valid;
    and the values found of `read_ahead`, more keys of the tenant's cache read in the same round
    trip (none while the prefix's tenant is not known in this process)."""
    tenant_id = _tenant_of_prefix.get(prefix)
    if tenant_id is None:
        # The tenant is unknown, so its epoch cannot be read before the database is: nothing is
        # cached this time but the tenant, and the next request caches the snapshot.
        snapshots = _snapshots_from_database(prefix, epoch=None)
        if len(snapshots) == 1:
            _remember_tenant(prefix, snapshots[0]["key"]["tenant_id"])
        return [_record(snapshot) for snapshot in snapshots], {}
    with tenant_context(tenant_id):
        try:
            found = cache.get_many([EPOCH_KEY, _snapshot_key(prefix), *read_ahead])
        except REDIS_ERRORS:
            log.warning("api_key_cache_unavailable")
            return [_record(s) for s in _snapshots_from_database(prefix, epoch=None)], {}
        ahead = {key: found[key] for key in read_ahead if key in found}
        epoch = found.get(EPOCH_KEY)
        snapshot = found.get(_snapshot_key(prefix))
        if snapshot is not None and snapshot["epoch"] == epoch:
            return [_record(snapshot)], ahead
        snapshots = _snapshots_from_database(prefix, epoch=epoch)
        mine = [s for s in snapshots if s["key"]["tenant_id"] == tenant_id]
        if len(mine) == 1:
            try:
                cache.set(_snapshot_key(prefix), mine[0], timeout=SNAPSHOT_SECONDS)
            except REDIS_ERRORS:
                log.warning("api_key_cache_unavailable")
    return [_record(snapshot) for snapshot in snapshots], ahead


def tenant_of_prefix(prefix: str) -> uuid.UUID | None:
    """The tenant of the keys with this prefix, once this process has looked one up."""
    return _tenant_of_prefix.get(prefix)


def cached_names(prefix: str) -> tuple[str, str]:
    """The names, in the tenant's cache, of its access epoch and of the prefix's snapshot."""
    return EPOCH_KEY, _snapshot_key(prefix)


def records_from_cached(epoch: Any, snapshot: Any) -> list[KeyRecord] | None:
    """The records of a snapshot as the cache returned it (decoded), if it was built under the
    epoch; None otherwise: the look-up must go to the database, as `records_for_prefix` does."""
    if snapshot is None or epoch is None or snapshot["epoch"] != epoch:
        return None
    return [_record(snapshot)]


def _remember_tenant(prefix: str, tenant_id: uuid.UUID) -> None:
    if len(_tenant_of_prefix) >= _TENANT_MEMORY_SIZE:
        _tenant_of_prefix.clear()
    _tenant_of_prefix[prefix] = tenant_id


def _snapshots_from_database(prefix: str, *, epoch) -> list[dict]:
    with operator_scope("authenticating an API key"):
        keys = list(ApiKey.objects.select_related("tenant__plan").filter(prefix=prefix)[:4])
        granted = {code for key in keys for code in key.permissions}
        existing = (
            set(Permission.objects.filter(code__in=granted).values_list("code", flat=True))
            if granted
            else set()
        )
    return [
        {
            "epoch": epoch,
            "key": {
                "id": key.id,
                "tenant_id": key.tenant_id,
                "name": key.name,
                "prefix": key.prefix,
                "permissions": list(key.permissions),
                "expires_at": key.expires_at,
                "revoked_at": key.revoked_at,
                "created_at": key.created_at,
            },
            "key_hash": key.key_hash,
            # The key's codes that still exist: a code removed from the catalogue grants nothing.
            "permissions": sorted(set(key.permissions) & existing),
            **tenant_snapshot(key.tenant),
        }
        for key in keys
    ]


def _record(snapshot: dict) -> KeyRecord:
    tenant = tenant_from_snapshot(snapshot)
    fields = {name: value for name, value in snapshot["key"].items() if name != "tenant_id"}
    api_key = ApiKey(tenant=tenant, **fields)
    return KeyRecord(
        api_key=api_key,
        key_hash=snapshot["key_hash"],
        permissions=frozenset(snapshot["permissions"]),
    )


# --- last used ---------------------------------------------------------------------------------

_marked_at: dict[uuid.UUID, float] = {}
_marked_lock = threading.Lock()


def _mark_key(api_key_id: uuid.UUID | str) -> str:
    return f"api-key-used:{api_key_id}"


def mark_used(api_key_id: uuid.UUID) -> None:
    """Note that the key was used now; `flush_marks` takes it to the database later."""
    now = time.monotonic()
    with _marked_lock:
        if now - _marked_at.get(api_key_id, float("-inf")) < MARK_INTERVAL_SECONDS:
            return
        if len(_marked_at) >= _TENANT_MEMORY_SIZE:
            _marked_at.clear()
        _marked_at[api_key_id] = now
    try:
        caches["platform"].set(_mark_key(api_key_id), timezone.now(), timeout=MARK_TTL_SECONDS)
    except REDIS_ERRORS:
        # Only last_used_at suffers, and only until the key's next use.
        log.warning("api_key_cache_unavailable")


def marks_for(api_key_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When each of these keys was last marked used, for those that were."""
    found = caches["platform"].get_many([_mark_key(key_id) for key_id in api_key_ids])
    return {
        key_id: found[_mark_key(key_id)] for key_id in api_key_ids if _mark_key(key_id) in found
    }


def api_key_last_used_flush(*, batch_size: int = 500) -> int:
    """Write the uses marked in the cache to `last_used_at`, for every tenant's keys.

    Run by beat every minute. Reads each unrevoked key's id and `last_used_at`, and the marks of
    a batch in one round trip; only keys used since their stored time are written, in one
    statement per batch. Returns how many keys were updated.
    """
    updated = 0
    with transaction.atomic(), operator_scope("recording when API keys were last used"):
        rows = ApiKey.objects.unrevoked().order_by().values_list("id", "last_used_at")
        batch: list[tuple[uuid.UUID, datetime | None]] = []
        for row in rows.iterator(chunk_size=batch_size):
            batch.append(row)
            if len(batch) == batch_size:
                updated += _flush_batch(batch)
                batch = []
        if batch:
            updated += _flush_batch(batch)
    return updated


def _flush_batch(batch: list[tuple[uuid.UUID, datetime | None]]) -> int:
    marks = marks_for([key_id for key_id, _ in batch])
    changed = [
        ApiKey(id=key_id, last_used_at=marks[key_id])
        for key_id, stored in batch
        if key_id in marks and (stored is None or marks[key_id] > stored)
    ]
    if changed:
        ApiKey.objects.bulk_update(changed, ["last_used_at"])
    return len(changed)
