"""GraphQL reads answered from the catalog cache, as REST's cached reads are.

A query that asks only for catalog fields (`CACHED_ROOT_FIELDS`) has an answer that depends on
nothing but the tenant's catalog and the document: its response is kept in the catalog cache
(catalog/cache.py) under the tenant's catalog version, which every catalog write replaces, keyed
by the document (query, operation name and variables). The next request for the same document
is answered before Strawberry runs, through the kernel's cached-read path
(kernel/api/cached_reads.py): the credential checked in its fast form, `catalog.read` required
(every cached field needs it), the rate limit's token taken, the entry read.

Only documents this process has seen run, without an error, and that cost one rate-limit token
(graphql_api/limits.py) are answered that way: a costlier document's price is its cost, which
only the full path takes, and an unknown document's fields are not known before it is parsed.
The response is kept under the catalog version read before the document ran, so that a write
while it ran leaves it unreachable. A response read from a replica is never kept (it is served,
as REST's are, catalog/cache.py): the replica may not have replayed the write that moved the
version yet, and its stale answer would be stored under the new version for everyone.
"""

import json
import threading
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse

from catalog import cache as catalog_cache
from graphql_api.limits import Measure, tokens_for
from kernel import replicas
from kernel.api.cached_reads import CachedRead

KIND = "graphql"
# Query fields whose answers are the catalog's only (and all need catalog.read).
CACHED_ROOT_FIELDS = frozenset({"product", "products", "category", "categories"})
# Documents remembered per process, as cacheable or not.
KNOWN_DOCUMENTS = 4096


class _Known:
    """Documents by key: True when their response may be kept and served, False when not."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._documents: OrderedDict[str, bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bool | None:
        with self._lock:
            found = self._documents.get(key)
            if found is not None:
                self._documents.move_to_end(key)
            return found

    def put(self, key: str, cacheable: bool) -> None:
        with self._lock:
            self._documents[key] = cacheable
            self._documents.move_to_end(key)
            while len(self._documents) > self._size:
                self._documents.popitem(last=False)


_known = _Known(KNOWN_DOCUMENTS)


def json_body(request: HttpRequest) -> Any:
    """A POST's JSON body, parsed (the view hands it on to Strawberry, which would parse it
    again); None when it is no JSON request or does not parse (Strawberry says why)."""
    if request.method != "POST" or request.content_type != "application/json":
        return None
    try:
        return json.loads(request.body)
    except ValueError:
        return None


def document_key(request: HttpRequest, body: Any) -> str | None:
    """The document a request sends (`body`: its parsed JSON body, for a POST), in one canonical
    text; None when it sends none that the cache could answer (not JSON, no query, a batch)."""
    if request.method == "GET":
        query = request.GET.get("query")
        operation = request.GET.get("operationName") or ""
        try:
            variables = json.loads(request.GET.get("variables") or "{}")
        except ValueError:
            return None
    elif isinstance(body, dict):
        query, operation, variables = (
            body.get("query"),
            body.get("operationName") or "",
            body.get("variables") or {},
        )
    else:
        return None
    if not isinstance(query, str) or not isinstance(operation, str):
        return None
    if not isinstance(variables, dict):
        return None
    return "\n".join(
        [operation, json.dumps(variables, sort_keys=True, separators=(",", ":")), query]
    )


def cached_read(request: HttpRequest, key: str | None) -> CachedRead | None:
    """The cache entry that would answer this request, if its document is one that may be
    answered from the cache."""
    if key is None or not _known.get(key) or not catalog_cache.servable():
        return None
    return CachedRead(
        version_key=catalog_cache.VERSION_KEY,
        entry_key=lambda version: catalog_cache.entry_key_for(version, kind=KIND, key=key),
        respond=lambda stored: HttpResponse(
            catalog_cache.hit(KIND, stored).body, content_type="application/json"
        ),
    )


def version_before(request: HttpRequest, key: str | None, missed: Any) -> str | None:
    """The catalog version to keep this request's response under, read before it runs; None
    when it will not be kept (a document known not to be cacheable, or the cache is down)."""
    if key is None or _known.get(key) is False:
        return None
    if missed is not None:
        return missed[0]  # read moments ago by the cached-read path, which found no entry
    return catalog_cache.catalog_version()


def keep(
    key: str | None, version: str | None, measure: Measure | None, body: bytes, *, failed: bool
) -> None:
    """Remember whether the document may be served from the cache, and keep its response when
    it may and was read from the primary (called where the response was read)."""
    if key is None or measure is None or failed:
        # An error says nothing of the document (the caller may lack the permission, the id
        # may be another tenant's): neither kept nor remembered.
        return
    cacheable = (
        measure.operation == "query"
        and bool(measure.root_fields)
        and measure.root_fields <= CACHED_ROOT_FIELDS
        and tokens_for(measure.cost) == 1
    )
    _known.put(key, cacheable)
    # Whether the document may be kept depends on the document alone; whether this response may
    # be, on where it was read.
    if cacheable and version is not None and replicas.read_alias() == DEFAULT_DB_ALIAS:
        catalog_cache.store(
            version=version,
            kind=KIND,
            key=key,
            response=catalog_cache.CachedResponse(body=body, etag=catalog_cache.etag_for(body)),
            timeout=settings.CATALOG_LIST_CACHE_SECONDS,
        )
