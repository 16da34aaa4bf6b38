"""Cached catalog reads answered before DRF (kernel/api/cached_reads.py), through HTTP on Redis.

What is proven here: a hit costs two Redis round trips and no SQL, for a person's token and for
an API key; its answer is the one the view gives (body, ETag and headers, compared with the
same entry served through DRF); every refusal a cold read gets (401, 403, 404, 406, 400, 429) a
cached read gets too, whoever warmed the entry; a request takes one rate-limit token whichever
path answers it.
"""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from kernel.context import operator_scope
from kernel.tenancy.models import Membership, Tenant
from kernel.tenants import tenant_set_status
from kernel.tracked import connection_name, tracked_keys
from tests.accounts.test_api_keys import create_key, key_client
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    category_url,
    client_without_catalog_read,
    editor_client,
    make_category,
    make_product,
    product_url,
    viewer_client,
)
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.helpers import assert_problem, member_with_role, owner_of, sign_in
from tests.kernel.test_ratelimit import make_plan, tenant_on_plan

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

LOGOUT = "/api/v1/auth/logout/"
LIST = f"{PRODUCTS}?in_stock=true&ordering=-price&page_size=10"
# Headers that differ between two answers of the same entry, by design.
PER_RESPONSE = {
    "X-Request-ID",
    "traceresponse",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
}


@pytest.fixture
def catalog(tenant):
    category = make_category(tenant, name="Lamps")
    product = make_product(tenant, category=category, stock=3)
    return {
        "product list": LIST,
        "product detail": product_url(product.id),
        "product detail, sparse": f"{product_url(product.id)}?fields=id,name",
        "category list": CATEGORIES,
        "category detail": category_url(category.id),
    }


@pytest.fixture
def redis_round_trips(monkeypatch):
    """The Redis commands the application sends, one entry per round trip (a command, a pipeline,
    a script), counted where redis-py writes to its socket."""
    from redis.connection import AbstractConnection

    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def send_packed_command(connection, command, check_health=True):
        chunks = command if isinstance(command, list) else [command]
        sent.append(b"".join(bytes(chunk) for chunk in chunks))
        return original(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    return sent


def counted(name: str, **labels: str) -> float:
    """A counter of /metrics, as this process holds it."""
    return REGISTRY.get_sample_value(f"tenantapi_{name}_total", labels) or 0


def commands_of(round_trips: list[bytes]) -> list[bytes]:
    return [trip.split(b"\r\n")[2].upper() for trip in round_trips]


def test_a_hit_costs_at_most_two_redis_round_trips_and_no_sql(
    tenant, catalog, redis_round_trips, django_assert_num_queries
):
    # A new sign-in: this process has not resolved the person yet.
    client = editor_client(tenant)
    for label, url in catalog.items():
        warm = client.get(url)  # a miss: the view computes and stores the entry
        assert warm.status_code == 200, label
        client.get(url)  # the process's first hit may open its tracking connection
        for headers in ({}, {"HTTP_IF_NONE_MATCH": warm["ETag"]}, {}):
            redis_round_trips.clear()
            with django_assert_num_queries(0):
                response = client.get(url, **headers)
            assert response.status_code == (304 if headers else 200), label
            assert len(redis_round_trips) <= 2, (label, redis_round_trips)


def test_a_persons_hits_mostly_ask_redis_nothing(
    tenant, catalog, redis_round_trips, django_assert_num_queries, settings
):
    # Long enough that neither the tracked values' confirmation nor a lease runs out mid-test.
    settings.CACHED_READ_TRACKING_CONFIRM_SECONDS = 60
    settings.RATELIMIT_LEASE_SECONDS = 60
    client = editor_client(tenant)
    url = catalog["product list"]
    client.get(url)  # a miss
    client.get(url)  # the first hit: the process learns the person and the entry
    leases = counted("ratelimit_leases", outcome="taken")
    tracked_reads = counted("tracked_keys_reads")
    per_hit = []
    for _ in range(15):
        redis_round_trips.clear()
        with django_assert_num_queries(0):
            assert client.get(url).status_code == 200
        per_hit.append(commands_of(redis_round_trips))
    # The values the hit checks come from the process's tracked keys; the rate limit's tokens
    # from leases of 2, 4, 8 and 16 tokens (after the first hit's 1), each taken when the last is
    # spent.
    assert per_hit == [[b"EVALSHA"] if hit in (0, 2, 6, 14) else [] for hit in range(15)], per_hit
    # Both show in /metrics: what an operator watches for the round trips hits still make.
    assert counted("ratelimit_leases", outcome="taken") == leases + 4
    assert counted("tracked_keys_reads") == tracked_reads


def test_the_first_hit_of_a_principal_resolves_it_with_the_version(
    tenant, catalog, redis_round_trips
):
    client = editor_client(tenant)
    client.get("/api/v1/tenant/")  # the member's snapshot is cached (but not in the process)
    url = catalog["product list"]
    editor_client(tenant).get(url)  # another member fills the entry
    redis_round_trips.clear()
    assert client.get(url).status_code == 200
    # The principal (and the version) in one MGET; the rate limit with the entry.
    assert commands_of(redis_round_trips) == [b"MGET", b"EVALSHA"]


def test_the_early_answer_is_the_views_answer(tenant, editor, catalog):
    # `?format=json` takes the view's path all the way (DRF reads it; the early path leaves
    # formats to DRF), to the same entry: served both ways, it must be the same response.
    for label, url in catalog.items():
        early = editor.get(url, HTTP_ACCEPT="application/json, text/plain, */*")
        through_drf = editor.get(f"{url}{'&' if '?' in url else '?'}format=json")
        assert early.status_code == through_drf.status_code == 200, label
        assert early.content == through_drf.content, label
        assert early["ETag"] == through_drf["ETag"], label
        assert set(early.headers) == set(through_drf.headers), label
        for header in set(early.headers) - PER_RESPONSE:
            assert early[header] == through_drf[header], (label, header)
        assert early["Cache-Control"] == "private, no-cache"
        assert "Authorization" in early["Vary"]
        assert int(early["RateLimit-Remaining"]) >= 0


def catalog_reading_key(tenant) -> APIClient:
    """A client with a new API key of the tenant that holds `catalog.read`."""
    return key_client(new_catalog_key(tenant))


def new_catalog_key(tenant, **fields) -> str:
    """A new API key of the tenant that holds `catalog.read`, made by its owner."""
    owner = APIClient()
    sign_in(owner, owner_of(tenant), tenant)
    return create_key(owner, ["catalog.read"], **fields)["key"]


def test_an_api_keys_hits_cost_at_most_two_round_trips_and_mostly_none(
    tenant, catalog, redis_round_trips, django_assert_num_queries, settings
):
    # Long enough that neither the tracked values' confirmation nor a lease runs out mid-test.
    settings.CACHED_READ_TRACKING_CONFIRM_SECONDS = 60
    settings.RATELIMIT_LEASE_SECONDS = 60
    machine = catalog_reading_key(tenant)
    for label, url in catalog.items():
        assert machine.get(url).status_code == 200, label  # learns the key's tenant, warms
        assert machine.get(url).status_code == 200, label  # caches the key's snapshot
        per_hit = []
        for _ in range(12):
            redis_round_trips.clear()
            with django_assert_num_queries(0):
                assert machine.get(url).status_code == 200, label
            per_hit.append(commands_of(redis_round_trips))
        assert all(len(trips) <= 2 for trips in per_hit), (label, per_hit)
        # The key's snapshot, the tenant's epoch and the version tracked; the rate limit's
        # tokens leased, the lease doubling each time it is spent: most hits ask Redis nothing.
        assert per_hit.count([]) >= 8, (label, per_hit)
        assert {command for trips in per_hit for command in trips} <= {b"EVALSHA"}, label


def test_a_revoked_api_key_and_a_key_without_catalog_read_are_refused_on_cached_entries(
    tenant, editor, catalog, django_capture_on_commit_callbacks
):
    owner = APIClient()
    sign_in(owner, owner_of(tenant), tenant)
    created = create_key(owner, ["catalog.read"])
    reader = key_client(created["key"])
    other_codes = key_client(create_key(owner, ["members.read"])["key"])
    for url in catalog.values():
        assert reader.get(url).status_code == 200
        assert reader.get(url).status_code == 200
        assert_problem(other_codes.get(url), 403)

    with django_capture_on_commit_callbacks(execute=True):
        assert owner.delete(f"/api/v1/api-keys/{created['id']}/").status_code == 204

    for url in catalog.values():
        assert_problem(reader.get(url), 401)


def test_a_write_is_visible_in_the_very_next_early_read(tenant, editor, catalog):
    url = catalog["product detail"]
    before = editor.get(url)
    editor.get(url)  # now a hit

    patched = editor.patch(url, {"name": "Renamed"}, format="json", HTTP_IF_MATCH=before["ETag"])
    assert patched.status_code == 200

    after = editor.get(url)
    assert after.json()["name"] == "Renamed"
    assert after["ETag"] == patched["ETag"] != before["ETag"]


def test_an_api_key_remembered_as_verified_is_refused_once_it_expires(tenant, catalog):
    # Long enough for the reads below on a loaded machine, short enough to wait out.
    expires = timezone.now() + timedelta(seconds=3)
    machine = key_client(new_catalog_key(tenant, expires_at=expires.isoformat()))
    url = catalog["product detail"]
    for _ in range(4):  # the tenant learned, the snapshot cached, then hits from tracked keys
        assert machine.get(url).status_code == 200

    time.sleep(max((expires - timezone.now()).total_seconds(), 0) + 0.1)

    assert_problem(machine.get(url), 401)


def test_a_wrong_secret_of_a_known_prefix_is_401_on_a_cached_entry(tenant, catalog):
    key = new_catalog_key(tenant)
    url = catalog["product list"]
    for _ in range(4):
        assert key_client(key).get(url).status_code == 200
    forged = f"{key[:-4]}{'A' if key[-4] != 'A' else 'B'}{key[-3:]}"
    for _ in range(2):
        assert_problem(key_client(forged).get(url), 401)
    assert key_client(key).get(url).status_code == 200


# --- every refusal of a cold read, on a warm entry -----------------------------------------------


def test_an_expired_token_is_401_on_a_cached_entry(tenant, editor, catalog):
    client = APIClient()
    access = sign_in(client, owner_of(tenant), tenant)["access"]
    expired = AccessToken(access)
    expired.set_exp(lifetime=-timedelta(seconds=1))
    for url in catalog.values():
        assert client.get(url).status_code == 200  # warm, and the token verified once
        assert_problem(APIClient().get(url, HTTP_AUTHORIZATION=f"Bearer {expired}"), 401)


def test_a_tampered_token_is_401_on_a_cached_entry(tenant, editor, catalog):
    access = sign_in(APIClient(), owner_of(tenant), tenant)["access"]
    header, payload, signature = access.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    for url in catalog.values():
        editor.get(url)
        assert_problem(APIClient().get(url, HTTP_AUTHORIZATION=f"Bearer {tampered}"), 401)


def test_a_signed_out_session_is_401_at_once_on_a_cached_entry(tenant, editor, catalog):
    client = APIClient()
    tokens = sign_in(client, member_with_role(tenant, "viewer"), tenant)
    url = catalog["product list"]
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 200  # a hit

    assert client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json").status_code == 204

    assert_problem(client.get(url), 401)


def test_a_removed_member_is_401_at_once_on_a_cached_entry(
    tenant, editor, catalog, django_capture_on_commit_callbacks
):
    viewer = member_with_role(tenant, "viewer")
    client = APIClient()
    sign_in(client, viewer, tenant)
    url = catalog["product detail"]
    assert client.get(url).status_code == 200
    with operator_scope("finding the membership"):
        membership = Membership.objects.get(tenant=tenant, user=viewer)

    owner = APIClient()
    sign_in(owner, owner_of(tenant), tenant)
    # The removal bumps the tenant's access epoch once it commits.
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.delete(f"/api/v1/members/{membership.pk}/").status_code == 204

    assert_problem(client.get(url), 401)


def test_a_changed_password_ends_earlier_tokens_at_once_on_a_cached_entry(
    tenant, editor, catalog, django_capture_on_commit_callbacks
):
    client = viewer_client(tenant)
    url = catalog["product list"]
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 200  # the principal is now known to the process

    with django_capture_on_commit_callbacks(execute=True):
        changed = client.post(
            "/api/v1/auth/password/change/",
            {"current_password": DEFAULT_PASSWORD, "new_password": "an entirely new secret 99"},
            format="json",
        )
    assert changed.status_code == 200, changed.content

    assert_problem(client.get(url), 401)


def test_a_suspended_tenant_is_403_on_a_cached_entry(
    tenant, editor, catalog, django_capture_on_commit_callbacks
):
    for url in catalog.values():
        assert editor.get(url).status_code == 200
    # As the admin's action does it: the service bumps the tenant's access epoch on commit.
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant_ids=[tenant.id], status=Tenant.Status.SUSPENDED)
    for url in catalog.values():
        assert_problem(editor.get(url), 403, "tenant-suspended")


def test_a_member_without_catalog_read_is_403_on_a_cached_entry(tenant, editor, catalog):
    outsider = client_without_catalog_read(tenant)
    for url in catalog.values():
        assert editor.get(url).status_code == 200
        assert_problem(outsider.get(url), 403)


def test_another_tenants_token_never_reaches_a_cached_entry(tenant, editor, catalog):
    other = editor_client(make_tenant(plan_code="pro"))
    for label, url in catalog.items():
        assert editor.get(url).status_code == 200
        response = other.get(url)
        if "list" in label:
            assert response.status_code == 200
            assert response.json()["results"] == [], label
        else:
            assert_problem(response, 404)


def test_a_format_other_than_json_is_refused_as_before_on_a_cached_entry(editor, catalog):
    for url in catalog.values():
        assert editor.get(url).status_code == 200
        assert editor.get(url, HTTP_ACCEPT="text/html").status_code == 406
        assert_problem(editor.get(f"{url}{'&' if '?' in url else '?'}format=xml"), 400)
        for accept in ("application/json", "*/*;q=0.8", "text/html, application/*"):
            assert editor.get(url, HTTP_ACCEPT=accept).status_code == 200, accept


def test_an_invalid_query_is_400_however_warm_the_list(editor):
    assert editor.get(PRODUCTS).status_code == 200
    for bad in ("?in_stock=maybe", "?page_size=0", "?ordering=secret", "?fields=password"):
        assert_problem(editor.get(f"{PRODUCTS}{bad}"), 400)


def test_a_request_takes_one_token_whichever_path_answers_it():
    plan = make_plan(burst=12, per_minute=1)
    tenant = tenant_on_plan(plan)
    make_product(tenant)
    client = editor_client(tenant)
    client.get(PRODUCTS)  # warm the list
    remaining = []
    # Hits, and misses that the early path looked up and handed on to the view.
    for url in (PRODUCTS, f"{PRODUCTS}?page_size=3", PRODUCTS, f"{PRODUCTS}?page_size=4"):
        response = client.get(url)
        assert response.status_code == 200
        remaining.append(int(response["RateLimit-Remaining"]))
    assert remaining == [remaining[0] - i for i in range(4)], remaining

    while (response := client.get(PRODUCTS)).status_code == 200:
        pass
    assert_problem(response, 429, "rate-limited")
    assert int(response["Retry-After"]) >= 1


def test_a_token_remembered_as_verified_is_refused_once_it_expires(tenant, catalog):
    # Verified tokens are remembered per process (accounts/credentials/access_tokens.py); expiry
    # is not.
    access = sign_in(APIClient(), owner_of(tenant), tenant)["access"]
    short = AccessToken(access)
    # Long enough for the two reads below on a loaded machine, short enough to wait out.
    short.set_exp(lifetime=timedelta(seconds=3))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {short}")
    url = catalog["product detail"]
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 200  # a hit, the token's check remembered

    time.sleep(max(short["exp"] - time.time(), 0) + 0.1)

    assert_problem(client.get(url), 401)
    assert_problem(client.get("/api/v1/tenant/"), 401)


def test_a_miss_reads_the_version_and_looks_for_the_entry_once(tenant, catalog, redis_round_trips):
    client = editor_client(tenant)
    client.get(catalog["product list"])  # the process knows the person from now on
    client.get(catalog["product list"])  # a hit: and it tracks the keys a hit checks
    for label, url in {
        "a list": f"{PRODUCTS}?page_size=3",
        "a detail": f"{catalog['product detail']}?fields=id,sku",
    }.items():
        redis_round_trips.clear()
        assert client.get(url).status_code == 200, label
        # The early path's look for the entry (the version is tracked, the rate limit's tokens
        # leased); then the view authenticates and computes under that version, without reading
        # it or looking for the entry again: the stampede lock, the entry, the lock released.
        assert commands_of(redis_round_trips)[-5:] == [
            b"GET",
            b"MGET",
            b"SET",
            b"SET",
            b"DEL",
        ], label
        assert set(commands_of(redis_round_trips)[:-5]) <= {b"EVALSHA"}, label
    machine = catalog_reading_key(tenant)
    machine.get(catalog["product list"])  # the process learns the key's tenant
    machine.get(catalog["product list"])  # caches the key's snapshot
    machine.get(catalog["product list"])  # a hit: and tracks it
    redis_round_trips.clear()
    assert machine.get(f"{PRODUCTS}?page_size=4").status_code == 200
    # The same for an API key: the look for the entry, then the view's authentication (the
    # key's snapshot) and the same three commands.
    assert commands_of(redis_round_trips)[-5:] == [b"GET", b"MGET", b"SET", b"SET", b"DEL"]
    assert set(commands_of(redis_round_trips)[:-5]) <= {b"EVALSHA"}


# --- what a process remembers between hits ------------------------------------------------------


@pytest.fixture
def redis_client():
    return get_redis_connection("default")


def own_tracking_connection(redis_client) -> dict:
    """This process's tracking connection, as Redis lists it (kernel/tracked.py)."""
    name = connection_name(os.getpid())
    (found,) = [client for client in redis_client.client_list() if client["name"] == name]
    return found


def test_a_tracking_connection_that_redis_closes_is_not_trusted_after(
    tenant, editor, catalog, redis_client
):
    url = catalog["product detail"]
    before = editor.get(url)
    assert editor.get(url).status_code == 200  # a hit: the version is tracked
    # Closed by Redis (a restart, `CLIENT KILL`, a timeout): no invalidation reaches this
    # process any more, and the write below would go unseen if what it tracked were still used.
    redis_client.client_kill_filter(_id=own_tracking_connection(redis_client)["id"])
    lost = counted("tracked_keys_lost", reason="connection")

    patched = editor.patch(url, {"name": "Renamed"}, format="json", HTTP_IF_MATCH=before["ETag"])
    assert patched.status_code == 200

    after = editor.get(url)
    assert after.json()["name"] == "Renamed"
    assert after["ETag"] == patched["ETag"]
    assert counted("tracked_keys_lost", reason="connection") == lost + 1
    # And the next hit tracks again, on a new connection.
    assert editor.get(url)["ETag"] == patched["ETag"]
    assert own_tracking_connection(redis_client)["flags"] == "t"


def test_what_a_silent_connection_tracked_is_trusted_no_longer_than_the_confirmation_interval(
    tenant, editor, catalog, settings
):
    settings.CACHED_READ_TRACKING_CONFIRM_SECONDS = 0.5
    url = catalog["product detail"]
    before = editor.get(url)
    assert editor.get(url).status_code == 200  # a hit: the version is tracked
    # A connection that stopped delivering invalidations without closing (a partition): the
    # only way to stage it here is to have the connection itself ask Redis to stop tracking.
    connection = tracked_keys()._connection
    connection.send_command("CLIENT", "TRACKING", "OFF")
    connection.read_response()
    try:
        patched = editor.patch(
            url, {"name": "Renamed"}, format="json", HTTP_IF_MATCH=before["ETag"]
        )
        assert patched.status_code == 200
        time.sleep(0.6)

        assert editor.get(url)["ETag"] == patched["ETag"]
    finally:
        # Not left to the tests that follow: a new connection tracks again.
        connection.disconnect()


def test_a_leases_unspent_tokens_go_back_to_the_buckets(settings):
    settings.RATELIMIT_LEASE_SECONDS = 0.5
    tenant = tenant_on_plan(make_plan(burst=400, per_minute=1))
    make_product(tenant)
    client = editor_client(tenant)
    sent = 0
    for _ in range(8):  # a miss, the first hit, then leases of 2 and 4 spent
        assert client.get(PRODUCTS).status_code == 200
        sent += 1
    # The next hit takes a lease of 8: one spent, seven left when the lease runs out.
    assert client.get(PRODUCTS).status_code == 200
    sent += 1
    time.sleep(0.6)
    # The next hit's lease call gives those seven back to the buckets before it takes its own.
    leased = client.get(PRODUCTS)
    sent += 1
    # A request outside the cache takes its token from the buckets themselves: they are short
    # of exactly the tokens spent, the seven given back.
    exact = client.get("/api/v1/tenant/")
    sent += 1
    credential_capacity = 200  # RATELIMIT_CREDENTIAL_SHARE of the burst
    assert int(exact["RateLimit-Remaining"]) == credential_capacity - sent
    assert int(leased["RateLimit-Remaining"]) == credential_capacity - sent + 1
