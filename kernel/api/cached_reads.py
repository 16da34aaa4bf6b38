"""Cached reads answered before DRF runs: a hit costs at most two Redis round trips, no SQL.

A view whose GET answers from a cache entry it can name up front (the catalog's lists and
details) describes that entry in `cached_read()`. `TenantScopedMixin.dispatch` then tries to
answer the request here, without DRF's request cycle, a transaction or the database:

1. the bearer token or API key is verified and its principal resolved exactly as the view's
   authentication classes do, reading the key the entry's name depends on (the catalog's
   version) in the same round trip (kernel/principals.py, accounts/apikeys.py);
2. the principal must hold the permission the view requires for the action;
3. the rate limit takes the request's tokens and reads the entry, in one script
   (kernel/ratelimit.py).

A person's next request, in the same process, mostly asks Redis nothing: the principal resolved
last is reused as long as the tenant's access epoch and the session's revocation mark say it
still holds (kernel/principals.py); those two and the version come from the process's tracked
keys, which Redis keeps exact (kernel/tracked.py); the rate limit's token from the process's lease
(kernel/ratelimit.py); and the entry from the process's memory of the entries it served
(`_Entries`), which the version in its key keeps exact. Without tracking, the rate limit's script
reads the three values: one round trip. An API key's hits are the same once the process knows
the key's tenant: its cached snapshot takes the place of the revocation mark.

A request that passes all of it but finds no entry leaves what it read on the request
(`missed()`): the view computes the entry under the version read here and does not read the
version, or look for the entry, again.

Only a request that passes all of it and finds its entry is answered here. Everything else (no
credential or another kind, a credential refused, a suspended tenant, a permission missing, the
rate limit refusing, a miss, Redis unavailable, an `Accept` or `?format=` other than plain
JSON) goes on to the view, which answers it as it always does: 401, 403, 429, a miss computed,
a 400 for a bad query. This path never refuses anything; it only says yes sooner. Tokens it
took are not taken again (`ratelimit.limit_api_request` reuses its decision).
"""

import functools
import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, QueryDict
from rest_framework import exceptions
from rest_framework.settings import api_settings as drf_settings
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from accounts import apikeys
from accounts.authentication import (
    KEYWORD,
    checked_key_principal,
    matching_principal,
    verify_api_key,
)
from kernel import principals, ratelimit
from kernel.authentication import access_claims, act_for_request, checked_principal
from kernel.principals import CACHE_ERRORS, Principal, resolve_principal
from kernel.tenancy.context import tenant_context
from kernel.tracked import tracked_keys

# The media ranges that DRF's negotiation matches with the views' one renderer (JSON).
_JSON_RANGES = frozenset({"*/*", "application/*", "application/json"})
API_KEY_KEYWORD = KEYWORD.decode()


@dataclass(frozen=True, slots=True)
class CachedRead:
    """The cache entry that answers a GET, named before the request is authenticated."""

    # A key of the tenant's cache that the entry's key is made from (a version).
    version_key: str
    # The entry's key in the tenant's cache, from the version key's value.
    entry_key: Callable[[Any], str]
    # The response to send, from the stored entry.
    respond: Callable[[Any], HttpResponse]


def answer(request: HttpRequest, read: CachedRead, *, permission: str) -> HttpResponse | None:
    """The response from the cache entry, or None: then the view runs as usual.

    `permission` is the one the view requires of the request.
    """
    if not _plain_json_wanted(request):
        return None
    kind, _, credential = request.META.get(jwt_settings.AUTH_HEADER_NAME, "").partition(" ")
    if not credential or any(space in credential for space in " \t"):
        return None
    try:
        if kind in jwt_settings.AUTH_HEADER_TYPES:
            found = _for_person(request, credential.encode("latin-1"), read, permission)
        elif kind.lower() == API_KEY_KEYWORD:
            found = _for_machine(request, credential, read, permission)
        else:
            return None
    except exceptions.APIException:
        return None  # the view's authentication says why, in the usual words
    if found is None:
        return None
    principal, stored = found
    act_for_request(principal)
    if principal.api_key is not None:
        apikeys.mark_used(principal.api_key.id)
    return read.respond(stored)


def _for_person(
    request: HttpRequest, raw_token: bytes, read: CachedRead, permission: str
) -> tuple[Principal, Any] | None:
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
        return _limited_read(request, principal, resolved.read_ahead, read, permission)

    # Whether the principal this process resolved last still holds (the tenant's epoch, the
    # session's revocation mark), and the version: from the process's tracked keys, which Redis
    # keeps exact (kernel/tracked.py); the rate limit's tokens from the process's lease. Most hits
    # ask Redis nothing. Without tracking, one round trip: the rate limit's script reads them.
    principal = checked_principal(known, claims)
    if not principal.has_permission(permission):
        return None
    namespace = _namespace()
    names = (*principals.freshness_names(claims.session_id), read.version_key)
    keys = _raw_keys(claims.tenant_id, names, namespace)
    values = _tracked_values(keys)
    if values is None:
        decision = ratelimit.limit_principal_and_read(request, principal, keys)
        values = decision.read
    else:
        decision = ratelimit.limit_principal_leased(request, principal)
    if not decision.allowed or len(values) != len(keys):
        return None
    if not principals.still_current(known, values[:2]):
        principals.forget(claims.tenant_id, claims.user_id)
        return None
    if values[2] is None:
        return None
    stored = _stored_entry(request, claims.tenant_id, read, values[2], namespace)
    return None if stored is None else (principal, stored)


def _for_machine(
    request: HttpRequest, key: str, read: CachedRead, permission: str
) -> tuple[Principal, Any] | None:
    """An API key's read: as a person's, from tracked keys and a lease once the process knows the
    key's tenant and the key's snapshot is in the cache; else the usual look-up (the snapshot and
    the version in one round trip), then the rate limit's script with the entry."""
    prefix = apikeys.parse_prefix(key)
    tenant_id = apikeys.tenant_of_prefix(prefix) if prefix is not None else None
    if tenant_id is not None:
        namespace = _namespace()
        names = (*apikeys.cached_names(prefix), read.version_key)
        values = _tracked_values(_raw_keys(tenant_id, names, namespace))
        principal = None
        if values is not None and None not in values:
            principal = _machine_principal(key, values[0], values[1])
        if principal is not None:
            principal = checked_key_principal(principal)
            if not principal.has_permission(permission):
                return None
            if not ratelimit.limit_principal_leased(request, principal).allowed:
                return None
            stored = _stored_entry(request, tenant_id, read, values[2], namespace)
            return None if stored is None else (principal, stored)
    principal, read_ahead = verify_api_key(key, read_ahead=[read.version_key])
    return _limited_read(request, principal, read_ahead, read, permission)


# The same bytes come back on every request until the epoch or the snapshot changes: the key is
# checked against them once (its hash, revocation, its tenant), not on every request. A key that
# fails raises, and is not remembered; expiry and suspension are checked on every use.
@functools.lru_cache(maxsize=4096)
def _machine_principal(key: str, raw_epoch: bytes, raw_snapshot: bytes) -> Principal | None:
    records = apikeys.records_from_cached(
        principals.decoded_token(raw_epoch), cache.client.decode(raw_snapshot)
    )
    return None if records is None else matching_principal(key, records)


def _stored_entry(
    request: HttpRequest, tenant_id: uuid.UUID, read: CachedRead, raw_version: bytes, namespace
) -> Any:
    """The entry named by the version, from the process's memory or the cache; None on a miss,
    which is left on the request for the view (`missed()`)."""
    version = principals.decoded_token(raw_version)
    entry_key = read.entry_key(version)
    remembered_as = (namespace, tenant_id, entry_key)
    stored = _entries.get(remembered_as)
    if stored is None:
        try:
            with tenant_context(tenant_id):
                stored = cache.get(entry_key)
        except CACHE_ERRORS:
            return None  # the view's cache handles the outage
        if stored is None:
            _missed(request, version, entry_key)
            return None
        _entries.put(remembered_as, stored)
    return stored


@functools.lru_cache(maxsize=4096)
def _raw_keys(tenant_id: uuid.UUID, names: tuple[str, ...], namespace: tuple) -> tuple[str, ...]:
    """The raw Redis keys of these names in the tenant's cache: the same few for every hit of a
    session or an API key, made once (per cache namespace, which tests vary)."""
    with tenant_context(tenant_id):
        return tuple(cache.make_key(name) for name in names)


def _namespace() -> tuple:
    options = settings.CACHES["default"]
    return options.get("LOCATION", ""), options.get("KEY_PREFIX", ""), options.get("VERSION", 1)


def _tracked_values(keys: Sequence[str]) -> list[bytes | None] | None:
    tracked = tracked_keys()
    return None if tracked is None else tracked.values(keys)


def _limited_read(
    request: HttpRequest,
    principal: Principal,
    read_ahead: dict[str, Any],
    read: CachedRead,
    permission: str,
) -> tuple[Principal, Any] | None:
    """The second round trip of a principal resolved in the first: the rate limit's tokens, and
    the entry named by the version read ahead."""
    version = read_ahead.get(read.version_key)
    if version is None or not principal.has_permission(permission):
        return None
    entry_key = read.entry_key(version)
    with tenant_context(principal.tenant.id):
        full_key = cache.make_key(entry_key)
    decision = ratelimit.limit_principal_and_read(request, principal, [full_key])
    if not decision.allowed or len(decision.read) != 1:
        return None
    if decision.read[0] is None:
        _missed(request, version, entry_key)
        return None
    stored = cache.client.decode(decision.read[0])
    _entries.put((_namespace(), principal.tenant.id, entry_key), stored)
    return principal, stored


_MISSED_ATTRIBUTE = "_cached_read_missed"


def _missed(request: HttpRequest, version: Any, entry_key: str) -> None:
    setattr(request, _MISSED_ATTRIBUTE, (version, entry_key))


def missed(request: HttpRequest) -> tuple[Any, str] | None:
    """(version, entry key) when this request's early read found the version and no entry
    under it: the view computes the entry under that version, without reading either again."""
    return getattr(request, _MISSED_ATTRIBUTE, None)


class _Entries:
    """The entries this process served last, by (cache namespace, tenant, entry key): an entry
    key names one immutable entry (the version it embeds changes with every write), so a
    remembered entry is the stored one for as long as its version is the current one, which the
    caller has just checked. Bounded in count and in the size of each entry; the least recently
    served go first."""

    def __init__(self, size: int, largest: int) -> None:
        self.size, self.largest = size, largest
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            stored = self._entries.get(key)
            if stored is not None:
                self._entries.move_to_end(key)
            return stored

    def put(self, key: tuple, stored: Any) -> None:
        if len(pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)) > self.largest:
            return
        with self._lock:
            self._entries[key] = stored
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


# A few hundred of the hottest pages, each at most 64 KB: at most ~16 MB a process.
_entries = _Entries(size=256, largest=64 * 1024)


def _plain_json_wanted(request: HttpRequest) -> bool:
    """The client takes JSON as the view renders it: no `?format=`, and an Accept header that
    DRF's negotiation would match with the JSON renderer, with no parameter but a weight."""
    if drf_settings.URL_FORMAT_OVERRIDE in _parameter_names(request.META.get("QUERY_STRING", "")):
        return False
    header = request.META.get("HTTP_ACCEPT", "")
    if not header.strip():
        return True
    for media_range in header.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if any(not parameter.startswith("q=") for parameter in parameters):
            return False
        if media_type in _JSON_RANGES:
            return True
    return False


# The names in a query string, as `request.GET` would decode them, remembered per distinct
# string: a hit needs only to know whether `format` is one, and parsing it is a hit's cost.
@functools.lru_cache(maxsize=4096)
def _parameter_names(query_string: str) -> frozenset[str]:
    return frozenset(QueryDict(query_string))
