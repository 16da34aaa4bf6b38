"""Cached reads answered before DRF runs: a hit costs two Redis round trips and no SQL.

A view whose GET answers from a cache entry it can name up front (the catalog's lists and
details) describes that entry in `cached_read()`. `TenantScopedMixin.dispatch` then tries to
answer the request here, without DRF's request cycle, a transaction or the database:

1. the bearer token or API key is verified and its principal resolved exactly as the view's
   authentication classes do, reading the key the entry's name depends on (the catalog's
   version) in the same round trip (tenants/principals.py, accounts/apikeys.py);
2. the principal must hold the permission the view requires for the action;
3. the rate limit takes the request's tokens and reads the entry, in one script
   (core/ratelimit.py).

Only a request that passes all of it and finds its entry is answered here. Everything else (no
credential or another kind, a credential refused, a suspended tenant, a permission missing, the
rate limit refusing, a miss, Redis unavailable, an `Accept` or `?format=` other than plain
JSON) goes on to the view, which answers it as it always does: 401, 403, 429, a miss computed,
a 400 for a bad query. This path never refuses anything; it only says yes sooner. Tokens it
took are not taken again (`ratelimit.limit_api_request` reuses its decision).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.settings import api_settings as drf_settings
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from accounts import apikeys
from accounts.authentication import KEYWORD, verify_api_key
from core import ratelimit
from tenants.authentication import act_for_request, verify_access_token
from tenants.context import tenant_context
from tenants.principal import Principal

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
    try:
        verified = _verify_credential(request, read_ahead=[read.version_key])
    except exceptions.APIException:
        return None  # the view's authentication says why, in the usual words
    if verified is None:
        return None
    principal, read_ahead = verified
    version = read_ahead.get(read.version_key)
    if version is None or not principal.has_permission(permission):
        return None
    with tenant_context(principal.tenant.id):
        entry_key = cache.make_key(read.entry_key(version))
    decision = ratelimit.limit_principal_and_read(request, principal, [entry_key])
    if not decision.allowed or not decision.read or decision.read[0] is None:
        return None
    act_for_request(principal)
    if principal.api_key is not None:
        apikeys.mark_used(principal.api_key.id)
    return read.respond(cache.client.decode(decision.read[0]))


def _plain_json_wanted(request: HttpRequest) -> bool:
    """The client takes JSON as the view renders it: no `?format=`, and an Accept header that
    DRF's negotiation would match with the JSON renderer, with no parameter but a weight."""
    if drf_settings.URL_FORMAT_OVERRIDE in request.GET:
        return False
    header = request.headers.get("Accept", "")
    if not header.strip():
        return True
    for media_range in header.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if any(not parameter.startswith("q=") for parameter in parameters):
            return False
        if media_type in _JSON_RANGES:
            return True
    return False


def _verify_credential(
    request: HttpRequest, *, read_ahead: list[str]
) -> tuple[Principal, dict[str, Any]] | None:
    """The principal of the request's bearer token or API key, as the view's authentication
    classes would resolve it (or their exception); None for any other or a malformed header."""
    header = request.META.get(jwt_settings.AUTH_HEADER_NAME, "")
    kind, _, credential = header.partition(" ")
    if not credential or any(space in credential for space in " \t"):
        return None
    if kind in jwt_settings.AUTH_HEADER_TYPES:
        return verify_access_token(credential.encode("latin-1"), read_ahead=read_ahead)
    if kind.lower() == API_KEY_KEYWORD:
        return verify_api_key(credential, read_ahead=read_ahead)
    return None
