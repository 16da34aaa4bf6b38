"""Conditional requests: ETag, If-None-Match (304) and If-Match (412), per RFC 9110.

ETags are strong (catalog.cache.etag_for): `"<digest of the body>"` on lists, and
`"<row version>-<digest>"` on a product or category. If-None-Match compares them weakly, as the
RFC says (a `W/` prefix is ignored). If-Match compares strongly and only the version part: the
version is what a write can be conditional on (the UPDATE's `WHERE version = n`); the digest part
also covers `related`, which other products' writes change without changing this product.
"""

import re

from django.http import HttpResponse, HttpResponseNotModified
from django.utils.http import parse_etags
from rest_framework.request import Request

from catalog.cache import CachedResponse

# Every cached GET is per tenant and per credential, and must be revalidated before reuse:
# writes are visible at once, and a 304 costs no query.
CACHE_CONTROL = "private, no-cache"
_VERSIONED_ETAG = re.compile(r'^"(\d{1,10})-[0-9a-f]+"$')


def conditional_get(request: Request, cached: CachedResponse) -> HttpResponse:
    """The cached body, or 304 when the client holds it already."""
    headers = {"ETag": cached.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}
    if _none_match(request, cached.etag):
        response = HttpResponseNotModified(headers=headers)
    else:
        response = HttpResponse(cached.body, content_type="application/json", headers=headers)
    return response


def if_match_versions(request: Request) -> frozenset[int] | None:
    """The row versions If-Match accepts; None without the header (or with `*`, which any
    existing resource matches). An empty set matches nothing: a stale or foreign tag."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    versions = set()
    for tag in (part.strip() for part in header.split(",")):
        match = _VERSIONED_ETAG.match(tag)  # a weak W/"…" tag never matches: strong comparison
        if match:
            versions.add(int(match.group(1)))
    return frozenset(versions)


def _none_match(request: Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = parse_etags(header)
    if tags == ["*"]:
        return True
    return any(_opaque(tag) == _opaque(etag) for tag in tags)


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")
