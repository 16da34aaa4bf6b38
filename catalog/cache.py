"""The catalog's read cache: versioned keys, one recomputation per cold key, and no outage.

Where entries live
    The default cache, whose keys carry the tenant in context (kernel/tenancy/cache.py):
    nothing here names a tenant, and two tenants can never share an entry.

Invalidation: a version per tenant, not key deletion
    Every key embeds the tenant's catalog version, a random token under `catalog:version`.
    `catalog_changed()` replaces the token, and every entry of the tenant is unreachable at once,
    whichever process wrote it, without listing keys (entries age out by their TTL). Every write
    path calls it: the services (API, admin) and, later, the bulk import. It bumps twice: at once,
    so that the writer's next read is fresh even before its transaction ends, and again after
    commit, so that an entry a reader built from the pre-commit rows in between cannot survive.
    A random token rather than a counter: a counter evicted and restarted at 1 would bring back
    entries still cached under 1.

Stampedes
    On a miss, one request takes a short lock (`cache.add`, atomic) and recomputes; the others
    poll for its entry for up to LOCK_WAIT_SECONDS and then read the database themselves.

Outages
    A cache error is never the client's problem: reads fall back to the database and writes
    still succeed. The first failure is logged (and the recovery, once), every failure is
    counted, and for RETRY_AFTER_FAILURE_SECONDS the cache is not tried at all, so that a hung
    Redis costs one socket timeout rather than one per call. Version bumps that could not be
    written are kept and replayed as soon as the cache answers again, so that data changed
    during the outage is not served stale afterwards from entries cached before it.
"""

import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, transaction
from prometheus_client import Counter

from kernel import replicas
from kernel.context import require_tenant_id, tenant_context
from kernel.redis import REDIS_ERRORS, Backoff, PerCache

log = structlog.get_logger(__name__)

VERSION_KEY = "catalog:version"
LOCK_SECONDS = 10
LOCK_WAIT_SECONDS = 1.0
LOCK_POLL_SECONDS = 0.02
RETRY_AFTER_FAILURE_SECONDS = 5.0

CACHE_HITS = Counter(
    "catalog_cache_hits",
    "Catalog reads answered from the cache.",
    ["kind"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
CACHE_MISSES = Counter(
    "catalog_cache_misses",
    "Catalog reads the cache could not answer (computed from the database).",
    ["kind"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
CACHE_ERRORS_TOTAL = Counter(
    "catalog_cache_errors",
    "Catalog cache operations that failed or were skipped because the cache is unavailable.",
    ["operation"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    body: bytes
    etag: str


# --- a cache that fails soft -------------------------------------------------------------------


@dataclass
class _Health:
    """Whether the cache may be tried now, and the version bumps it missed while it could not."""

    backoff: Backoff = field(default_factory=Backoff)
    pending_bumps: set[uuid.UUID] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


# Per default cache: a test (or a deployment change) pointing the cache elsewhere starts afresh.
_health_per_cache = PerCache(_Health)


def _health() -> _Health:
    return _health_per_cache.get()


_MISSING = object()


def _call(operation: str, *args: Any, **kwargs: Any) -> Any:
    """`cache.<operation>(...)`, or _MISSING when the cache is unavailable."""
    health = _health()
    backoff = health.backoff
    if backoff.down and (not backoff.allows() or not _replay_bumps(health)):
        CACHE_ERRORS_TOTAL.labels(operation=operation).inc()
        return _MISSING
    try:
        result = getattr(cache, operation)(*args, **kwargs)
    except REDIS_ERRORS as exc:
        CACHE_ERRORS_TOTAL.labels(operation=operation).inc()
        _mark_down(health, operation, exc)
        return _MISSING
    if backoff.recovered() is not None:
        log.info("catalog_cache_recovered")
    return result


def _mark_down(health: _Health, operation: str, exc: Exception) -> None:
    if health.backoff.failed(RETRY_AFTER_FAILURE_SECONDS):
        log.warning("catalog_cache_unavailable", operation=operation, error=type(exc).__name__)


def _replay_bumps(health: _Health) -> bool:
    """Before the cache serves anything again, the versions it missed are bumped: else it would
    serve entries cached before writes made during the outage."""
    with health.lock:
        pending = list(health.pending_bumps)
    for tenant_id in pending:
        try:
            with tenant_context(tenant_id):
                cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
        except REDIS_ERRORS as exc:
            CACHE_ERRORS_TOTAL.labels(operation="set").inc()
            _mark_down(health, "set", exc)
            return False
        with health.lock:
            health.pending_bumps.discard(tenant_id)
    return True


# --- versions ------------------------------------------------------------------------------------


def catalog_changed() -> None:
    """Invalidate every cached catalog read of the tenant in context.

    Call it from every path that writes products or categories. Safe inside or outside a
    transaction, and never raises because of the cache.
    """
    tenant_id = require_tenant_id()
    _bump(tenant_id)
    transaction.on_commit(lambda: _bump(tenant_id))


def _bump(tenant_id: uuid.UUID) -> None:
    with tenant_context(tenant_id):
        if _call("set", VERSION_KEY, uuid.uuid4().hex, timeout=None) is _MISSING:
            health = _health()
            with health.lock:
                health.pending_bumps.add(tenant_id)


def catalog_version() -> str | None:
    """The tenant's current catalog version; None when the cache is unavailable."""
    version = _call("get", VERSION_KEY)
    if version is _MISSING:
        return None
    if version is None:
        candidate = uuid.uuid4().hex
        added = _call("add", VERSION_KEY, candidate, timeout=None)
        if added is _MISSING:
            return None
        version = candidate if added else _call("get", VERSION_KEY)
        if version is _MISSING or version is None:
            return None
    return version


# --- reads -------------------------------------------------------------------------------------


def etag_for(body: bytes, *, version: int | None = None) -> str:
    """A strong ETag: the body's digest, led by the row version where there is one.

    The version prefix is what If-Match compares (catalog/api/conditional.py), so that a client's
    ETag stays valid for a write even when parts of the body that are not the row itself
    (a product's `related`) change.
    """
    digest = hashlib.sha256(body).hexdigest()[:32]
    return f'"{version}-{digest}"' if version is not None else f'"{digest}"'


def cached_response(
    *,
    kind: str,
    key: str,
    timeout: int,
    compute: Callable[[], CachedResponse],
    missed: tuple[str, str] | None = None,
) -> CachedResponse:
    """The cached response for `key`, or `compute()`'s, stored for `timeout` seconds.

    `kind` (product_list, product_detail, ...) labels the hit and miss counters. Exceptions of
    `compute` (a 404) propagate and are not cached. `missed`: the (version, entry key) this
    request read moments ago and found no entry under (kernel/api/cached_reads.py), used
    rather than read again.
    """
    version, absent_key = missed if missed is not None else (catalog_version(), None)
    if version is None:
        CACHE_MISSES.labels(kind=kind).inc()
        return compute()
    entry_key = entry_key_for(version, kind=kind, key=key)
    stored = None if entry_key == absent_key else _call("get", entry_key)
    if stored not in (None, _MISSING):
        return hit(kind, stored)
    CACHE_MISSES.labels(kind=kind).inc()
    if stored is _MISSING or replicas.read_alias() != DEFAULT_DB_ALIAS:
        # A replica may not have replayed the write that moved `version` yet: what it answers
        # is served, never stored under that version for others (kernel/replicas.py).
        return compute()

    lock_key = f"{entry_key}:lock"
    acquired = _call("add", lock_key, 1, timeout=LOCK_SECONDS)
    if acquired is False:
        waited = _wait_for(entry_key)
        if waited is not None:
            return waited
    try:
        response = compute()
        _call("set", entry_key, (response.etag, response.body), timeout=timeout)
    finally:
        if acquired is True:
            _call("delete", lock_key)
    return response


def store(*, version: str, kind: str, key: str, response: CachedResponse, timeout: int) -> None:
    """Keep `response` for `key` under `version`: the catalog version read before the data the
    response holds was read (so that a write in between leaves it unreachable). For a caller that
    can tell only once it has computed a response that it is one to keep (a GraphQL query)."""
    _call(
        "set",
        entry_key_for(version, kind=kind, key=key),
        (response.etag, response.body),
        timeout=timeout,
    )


def servable() -> bool:
    """Whether stored entries may be served without going through `cached_response`: the cache
    is up and this process owes it no version bump (else an entry from before a write made
    during an outage could be served)."""
    health = _health()
    return not health.backoff.down and not health.pending_bumps


def entry_key_for(version: str, *, kind: str, key: str) -> str:
    """The cache key of the entry for `key`, under the tenant's catalog `version`."""
    return f"catalog:{version}:{kind}:{hashlib.sha256(key.encode()).hexdigest()}"


def hit(kind: str, stored: tuple[str, bytes]) -> CachedResponse:
    """A stored entry, counted as a hit of `kind`."""
    _hits_of(kind).inc()
    return _decode(stored)


@functools.cache
def _hits_of(kind: str) -> Any:
    # The counter's child for a kind: looked up once, not on every hit.
    return CACHE_HITS.labels(kind=kind)


def _wait_for(entry_key: str) -> CachedResponse | None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(LOCK_POLL_SECONDS)
        stored = _call("get", entry_key)
        if stored is _MISSING:
            return None
        if stored is not None:
            return _decode(stored)
    return None


def _decode(stored: tuple[str, bytes]) -> CachedResponse:
    etag, body = stored
    return CachedResponse(body=body, etag=etag)
