"""Cached reads answered before DRF runs: one entry point, `answer()`, called by
`TenantScopedMixin.dispatch` (kernel/api/base.py) for a view that names its cache entry up front
in `cached_read()` (the catalog's lists and details).

One hit, in order:

1. `answer()` takes plain-JSON requests only, and finds the credential's type in the registry
   (kernel/credentials.py); a type without `read_cached` goes on to the view.
2. The type's `read_cached` verifies the credential as its `verify` does, checks the permission
   the view requires, takes the rate limit's tokens (kernel/ratelimit/) and reads the version
   key and the entry. Most hits ask Redis nothing: the principal resolved last is reused while
   the tenant's access epoch and the credential's own mark (a session's revocation, an API key's
   snapshot) are unchanged; those and the version come from the process's tracked keys, which
   Redis keeps exact (kernel/tracked.py); the tokens from the process's lease; the entry from
   `_entries`, the entries this process served last. Without tracking, `limited_values()` reads
   them in the round trip that takes the rate limit's tokens: the rate limit's script and an
   MGET, pipelined. Access tokens: accounts/credentials/access_tokens.py; API keys:
   accounts/credentials/api_keys.py.
3. A hit acts as the principal (`credentials.act_for_request`) and answers from the entry.

A request that passes but finds no entry leaves what it read on the request (`missed()`): the
view computes the entry under that version without reading it again. Everything else (no
credential, a refusal, a missing permission, the rate limit refusing, Redis unavailable, another
`Accept` or a `?format=`) goes on to the view, which answers as it always does. This path never
refuses anything; it only says yes sooner. Tokens it took are not taken again
(`ratelimit.limit_api_request` reuses its decision). docs/catalog.md, "Cached reads", follows one
hit through the code.
"""

import functools
import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, QueryDict
from rest_framework import exceptions
from rest_framework.settings import api_settings as drf_settings

from kernel import credentials, principals, ratelimit, tracing
from kernel.context import tenant_context
from kernel.principals import Principal
from kernel.redis import REDIS_ERRORS, cache_identity
from kernel.tracked import tracked_keys

# The media ranges that DRF's negotiation matches with the views' one renderer (JSON).
_JSON_RANGES = frozenset({"*/*", "application/*", "application/json"})


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
    scheme, _, credential = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not credential or any(space in credential for space in " \t"):
        return None
    try:
        value = credential.encode("latin-1")
    except UnicodeEncodeError:
        return None  # the view's authentication says why, in the usual words
    credential_type = credentials.credential_type(scheme, value)
    if credential_type is None or credential_type.read_cached is None:
        return None
    try:
        found = credential_type.read_cached(request, value, read, permission)
    except exceptions.APIException:
        return None  # the view's authentication says why, in the usual words
    if found is None:
        return None
    principal, stored = found
    credentials.act_for_request(principal)
    # read_cached checked it, as the view would have.
    tracing.set_span_attribute(tracing.PERMISSION_ATTRIBUTE, permission)
    credential_type.used(principal)
    return read.respond(stored)


def stored_entry(
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
        except REDIS_ERRORS:
            return None  # the view's cache handles the outage
        if stored is None:
            _missed(request, version, entry_key)
            return None
        _entries.put(remembered_as, stored)
    return stored


@functools.lru_cache(maxsize=4096)
def raw_keys(tenant_id: uuid.UUID, names: tuple[str, ...], namespace: tuple) -> tuple[str, ...]:
    """The raw Redis keys of these names in the tenant's cache: the same few for every hit of a
    session or an API key, made once (per cache, `kernel.redis.cache_identity()`, which tests
    vary)."""
    with tenant_context(tenant_id):
        return tuple(cache.make_key(name) for name in names)


def tracked_values(keys: Sequence[str]) -> list[bytes | None] | None:
    tracked = tracked_keys()
    return None if tracked is None else tracked.values(keys)


def limited_values(
    request: HttpRequest, principal: Principal, keys: Sequence[str]
) -> tuple[ratelimit.Decision, list[bytes | None] | None]:
    """The principal's rate-limit decision and the raw values of `keys` (None where a key has
    none), in one round trip: the rate limit's script and an MGET, pipelined. The values are None
    when Redis could not be asked, or with rate limits off (then nothing is sent)."""
    return ratelimit.limit_principal_with(request, principal, ("MGET", *keys))


def limited_read(
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
    decision, values = limited_values(request, principal, [full_key])
    if not decision.allowed or values is None:
        return None
    if values[0] is None:
        _missed(request, version, entry_key)
        return None
    stored = cache.client.decode(values[0])
    _entries.put((cache_identity(), principal.tenant.id, entry_key), stored)
    return principal, stored


_MISSED_ATTRIBUTE = "_cached_read_missed"


def _missed(request: HttpRequest, version: Any, entry_key: str) -> None:
    setattr(request, _MISSED_ATTRIBUTE, (version, entry_key))


def missed(request: HttpRequest) -> tuple[Any, str] | None:
    """(version, entry key) when this request's early read found the version and no entry
    under it: the view computes the entry under that version, without reading either again."""
    return getattr(request, _MISSED_ATTRIBUTE, None)


class _Entries:
    """The entries this process served last, by (cache identity, tenant, entry key): an entry
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
