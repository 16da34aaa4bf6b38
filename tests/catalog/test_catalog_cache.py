"""The catalog's read cache, ETags and optimistic concurrency, through HTTP on real Redis.

What is proven here: a write is visible in the very next read; tenants never share an entry;
a 304 or a cache hit costs no SQL beyond authentication's; If-Match stops lost updates; a cold
key is computed once under a stampede; an unreachable Redis degrades to the database, and
invalidations missed meanwhile are replayed when it answers again; hits and misses reach
/metrics.
"""

import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.core.cache import cache
from prometheus_client import REGISTRY

from catalog import cache as catalog_cache
from catalog import services
from catalog.cache import CachedResponse, cached_response
from kernel.context import tenant_context
from kernel.problems import Problem
from tests.catalog_helpers import (
    PRODUCTS,
    baseline_queries,
    count_queries,
    editor_client,
    make_product,
    product_url,
    stored_product,
)
from tests.factories import make_tenant
from tests.helpers import assert_problem

# The pro plan: its per-credential rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

HITS = "tenantapi_catalog_cache_hits_total"
MISSES = "tenantapi_catalog_cache_misses_total"
ERRORS = "tenantapi_catalog_cache_errors_total"


@pytest.fixture
def redis_cache():
    if not hasattr(cache, "client") or not hasattr(cache.client, "get_client"):
        pytest.skip("needs the Redis cache (REDIS_URL)")
    return cache.client.get_client()


def counter(name: str, **labels: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["name"] for item in response.json()["results"]]


# --- freshness and isolation -------------------------------------------------------------------


def test_a_write_through_the_api_is_visible_in_the_very_next_read(tenant, editor):
    product = make_product(tenant, name="Before")
    url = product_url(product.id)
    assert names(editor.get(PRODUCTS)) == ["Before"]
    assert editor.get(url).json()["name"] == "Before"
    hits = counter(HITS, kind="product_list")
    assert names(editor.get(PRODUCTS)) == ["Before"]
    assert counter(HITS, kind="product_list") == hits + 1  # it really is cached

    editor.patch(url, {"name": "After"}, format="json")
    assert names(editor.get(PRODUCTS)) == ["After"]
    assert editor.get(url).json()["name"] == "After"

    created = editor.post(PRODUCTS, {"sku": "NEW-1", "name": "New", "price": "1"}, format="json")
    assert sorted(names(editor.get(PRODUCTS))) == ["After", "New"]

    editor.delete(url)
    assert names(editor.get(PRODUCTS)) == ["New"]
    assert_problem(editor.get(url), 404, "not-found")
    assert editor.get(product_url(created.json()["id"])).status_code == 200


def test_a_category_write_invalidates_product_lists_filtered_by_it(tenant, editor):
    from tests.catalog_helpers import category_url, make_category

    parent = make_category(tenant)
    child = make_category(tenant)
    make_product(tenant, name="In child", category=child)
    assert names(editor.get(PRODUCTS, {"category": parent.id})) == []

    editor.patch(category_url(child.id), {"parent": str(parent.id)}, format="json")

    assert names(editor.get(PRODUCTS, {"category": parent.id})) == ["In child"]


def test_two_tenants_never_see_each_others_cached_lists(tenant, editor):
    other = make_tenant()
    other_client = editor_client(other)
    make_product(tenant, name="Ours")
    make_product(other, name="Theirs")

    # The same URL, twice each, so that both answers come from the cache the second time.
    for _ in range(2):
        assert names(editor.get(PRODUCTS, {"page_size": 10})) == ["Ours"]
        assert names(other_client.get(PRODUCTS, {"page_size": 10})) == ["Theirs"]


def test_entries_live_in_the_tenants_namespace_with_their_ttl(
    tenant, editor, redis_cache, settings
):
    settings.CATALOG_LIST_CACHE_SECONDS = 120
    settings.CATALOG_DETAIL_CACHE_SECONDS = 60
    product = make_product(tenant)

    editor.get(PRODUCTS)
    editor.get(product_url(product.id))

    list_keys = redis_cache.keys(f"*t:{tenant.id}:catalog:*:product_list:*")
    detail_keys = redis_cache.keys(f"*t:{tenant.id}:catalog:*:product_detail:*")
    assert len(list_keys) == 1
    assert len(detail_keys) == 1
    assert 100 < redis_cache.ttl(list_keys[0]) <= 120
    assert 40 < redis_cache.ttl(detail_keys[0]) <= 60


def test_query_strings_that_mean_the_same_share_an_entry(tenant, editor):
    make_product(tenant)
    editor.get(PRODUCTS, {"in_stock": "1", "is_active": "true"})
    hits = counter(HITS, kind="product_list")

    response = editor.get(f"{PRODUCTS}?is_active=true&unknown=x&in_stock=true")

    assert response.status_code == 200
    assert counter(HITS, kind="product_list") == hits + 1


# --- ETags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [True, False])
def test_if_none_match_gives_a_304_without_a_body(tenant, editor, cached):
    product = make_product(tenant)
    for url in (PRODUCTS, product_url(product.id)):
        first = editor.get(url)
        etag = first["ETag"]
        assert etag.startswith('"')
        assert not etag.startswith("W/")
        assert first["Cache-Control"] == "private, no-cache"
        if not cached:
            _invalidate(tenant)

        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = editor.get(url, HTTP_IF_NONE_MATCH=header)
            assert response.status_code == 304, header
            assert response.content == b""
            assert response["ETag"] == etag

        assert editor.get(url, HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def test_a_write_changes_the_etag(tenant, editor):
    product = make_product(tenant)
    list_etag = editor.get(PRODUCTS)["ETag"]
    detail_etag = editor.get(product_url(product.id))["ETag"]

    patched = editor.patch(product_url(product.id), {"stock": 1}, format="json")

    assert editor.get(PRODUCTS, HTTP_IF_NONE_MATCH=list_etag).status_code == 200
    fresh = editor.get(product_url(product.id), HTTP_IF_NONE_MATCH=detail_etag)
    assert fresh.status_code == 200
    assert fresh["ETag"] == patched["ETag"] != detail_etag


def test_a_cached_304_or_hit_runs_no_query_at_all(tenant, editor):
    # Not even the savepoint pair of a request's transaction: a hit is answered before the view
    # opens one (kernel/api/cached_reads.py), authentication included, once its cache is warm.
    product = make_product(tenant)
    baseline_queries(editor)  # warms authentication's cache
    for url in (PRODUCTS, f"{PRODUCTS}?in_stock=true&ordering=price", product_url(product.id)):
        etag = editor.get(url)["ETag"]  # fills the cache

        queries_304, response_304 = count_queries(editor, url, HTTP_IF_NONE_MATCH=etag)
        queries_hit, response_hit = count_queries(editor, url)

        assert response_304.status_code == 304
        assert response_hit.status_code == 200
        assert queries_304 == 0, url
        assert queries_hit == 0, url


# --- If-Match and lost updates -------------------------------------------------------------------


def test_if_match_with_the_current_etag_allows_the_write(tenant, editor):
    product = make_product(tenant)
    etag = editor.get(product_url(product.id))["ETag"]

    response = editor.patch(product_url(product.id), {"stock": 2}, HTTP_IF_MATCH=etag)

    assert response.status_code == 200
    assert response.json()["version"] == 2


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_stale_if_match_is_412_and_changes_nothing(tenant, editor, method):
    product = make_product(tenant, name="Original")
    stale = editor.get(product_url(product.id))["ETag"]
    editor.patch(product_url(product.id), {"stock": 3}, format="json")  # version 2 now

    response = getattr(editor, method)(
        product_url(product.id),
        {"sku": product.sku, "name": "Lost", "price": "1"},
        format="json",
        HTTP_IF_MATCH=stale,
    )

    assert_problem(response, 412, "precondition-failed")
    after = stored_product(product.id)
    assert (after.name, after.version, after.stock) == ("Original", 2, 3)


@pytest.mark.parametrize("header", ['W/"1-abc"', '"garbage"', '"2-abc"', ""])
def test_if_match_that_is_weak_unparseable_or_ahead_never_matches(tenant, editor, header):
    product = make_product(tenant)

    response = editor.patch(product_url(product.id), {"stock": 9}, HTTP_IF_MATCH=header)

    assert_problem(response, 412, "precondition-failed")
    assert stored_product(product.id).stock == 10


def test_if_match_star_matches_any_existing_version(tenant, editor):
    product = make_product(tenant)

    assert editor.delete(product_url(product.id), HTTP_IF_MATCH="*").status_code == 204


def test_of_two_writers_holding_the_same_etag_only_one_wins(tenant, editor):
    product = make_product(tenant)
    other_editor = editor_client(tenant)
    etag = editor.get(product_url(product.id))["ETag"]

    first = editor.patch(product_url(product.id), {"name": "First"}, HTTP_IF_MATCH=etag)
    second = other_editor.patch(product_url(product.id), {"name": "Second"}, HTTP_IF_MATCH=etag)

    assert first.status_code == 200
    assert_problem(second, 412, "precondition-failed")
    assert stored_product(product.id).name == "First"


def test_the_update_is_conditional_on_the_version_in_the_database(tenant):
    # The race itself: both writers read version 1; the first commits version 2; the second's
    # UPDATE ... WHERE version = 1 then matches no row.
    product = make_product(tenant)
    with tenant_context(tenant.id):
        stale_copy = services.Product.objects.get(pk=product.pk)
        services.product_update(tenant=tenant, actor=None, product=product, data={"name": "First"})

        with pytest.raises(Problem) as refused:
            services.product_update(
                tenant=tenant,
                actor=None,
                product=stale_copy,
                data={"name": "Second"},
                expected_versions=frozenset({1}),
            )
        # Without If-Match the second write is applied on top of the first, never half.
        services.product_update(
            tenant=tenant, actor=None, product=stale_copy, data={"price": Decimal("7")}
        )

    assert refused.value.status_code == 412
    after = stored_product(product.id)
    assert (after.name, after.price, after.version) == ("First", Decimal("7.00"), 3)


# --- stampedes -----------------------------------------------------------------------------------


def test_a_cold_key_is_computed_once_however_many_ask_at_once(tenant, redis_cache):
    computed = []
    results = []

    def compute() -> CachedResponse:
        computed.append(1)
        time.sleep(0.3)  # a slow query: everyone else arrives meanwhile
        return CachedResponse(body=b'{"n": 1}', etag='"e"')

    def reader() -> None:
        with tenant_context(tenant.id):
            response = cached_response(
                kind="product_list", key=f"stampede-{key}", timeout=60, compute=compute
            )
            results.append(response.body)

    key = uuid.uuid4().hex
    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(computed) == 1
    assert results == [b'{"n": 1}'] * 8


# --- outages -----------------------------------------------------------------------------------


@pytest.fixture
def stopped_redis(throwaway_redis, settings):
    """The default cache pointed at a Redis that is down: connection refused on every call."""
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("needs the Redis cache (REDIS_URL)")
    throwaway_redis.stop()
    location = throwaway_redis.url(0)
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": location},
    }
    return location


def test_a_redis_outage_degrades_to_the_database(tenant, stopped_redis):
    client = editor_client(tenant)
    product = make_product(tenant, name="Served")
    errors = counter(ERRORS)

    assert names(client.get(PRODUCTS)) == ["Served"]
    assert client.get(product_url(product.id)).json()["name"] == "Served"
    created = client.post(PRODUCTS, {"sku": "O-1", "name": "Outage", "price": "1"}, format="json")
    assert created.status_code == 201
    assert (
        client.patch(product_url(product.id), {"name": "Still"}, format="json").status_code == 200
    )
    assert sorted(names(client.get(PRODUCTS))) == ["Outage", "Still"]
    assert client.delete(product_url(product.id)).status_code == 204
    assert counter(ERRORS) > errors


def test_invalidations_missed_during_an_outage_are_replayed_on_recovery(
    tenant, editor, monkeypatch
):
    product = make_product(tenant, name="Before")
    assert names(editor.get(PRODUCTS)) == ["Before"]  # cached

    class Unreachable:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise ConnectionError("Redis is unreachable")

            return fail

    monkeypatch.setattr(catalog_cache, "RETRY_AFTER_FAILURE_SECONDS", 0)
    monkeypatch.setattr(catalog_cache, "cache", Unreachable())
    # Written while the cache is unreachable: its version cannot be bumped now.
    assert (
        editor.patch(product_url(product.id), {"name": "After"}, format="json").status_code == 200
    )
    monkeypatch.setattr(catalog_cache, "cache", cache)

    # The cache answers again, and still holds the entry from before the write.
    assert names(editor.get(PRODUCTS)) == ["After"]


# --- metrics -----------------------------------------------------------------------------------


def test_hits_and_misses_are_in_metrics_without_a_tenant_label(tenant, editor, client):
    product = make_product(tenant)
    misses = counter(MISSES, kind="product_detail")
    hits = counter(HITS, kind="product_detail")

    editor.get(product_url(product.id))
    editor.get(product_url(product.id))

    assert counter(MISSES, kind="product_detail") == misses + 1
    assert counter(HITS, kind="product_detail") == hits + 1
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    lines = [line for line in text.splitlines() if line.startswith("tenantapi_catalog_cache_")]
    assert any(line.startswith(f'{HITS}{{kind="product_detail"}}') for line in lines)
    assert any(line.startswith(f'{MISSES}{{kind="product_detail"}}') for line in lines)
    assert not any(str(tenant.id) in line or "tenant_id=" in line for line in lines)
    assert not any("tenant=" in line for line in lines)


def _invalidate(tenant) -> None:
    with tenant_context(tenant.id):
        catalog_cache.catalog_changed()
