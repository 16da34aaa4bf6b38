"""Cached catalog reads answered before DRF (tenants/api/cached_reads.py), through HTTP on Redis.

What is proven here: a hit costs two Redis round trips and no SQL, for a person's token and for
an API key; its answer is the one the view gives (body, ETag and headers, compared with the
same entry served through DRF); every refusal a cold read gets (401, 403, 404, 406, 400, 429) a
cached read gets too, whoever warmed the entry; a request takes one rate-limit token whichever
path answers it.
"""

import time
from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from tenants.context import operator_scope
from tenants.models import Membership, Tenant
from tenants.services import tenant_set_status
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    category_url,
    client_without_catalog_read,
    editor_client,
    make_category,
    make_product,
    product_url,
)
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.helpers import assert_problem, member_with_role, owner_of, sign_in
from tests.test_api_keys import create_key, key_client
from tests.test_ratelimit import make_plan, tenant_on_plan

pytestmark = pytest.mark.django_db

LOGOUT = "/api/v1/auth/logout/"
LIST = f"{PRODUCTS}?in_stock=true&ordering=-price&page_size=10"
# Headers that differ between two answers of the same entry, by design.
PER_RESPONSE = {"X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}


@pytest.fixture
def tenant():
    return make_tenant(plan_code="pro")


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
def editor(tenant):
    return editor_client(tenant)


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


def commands_of(round_trips: list[bytes]) -> list[bytes]:
    return [trip.split(b"\r\n")[2].upper() for trip in round_trips]


def test_a_hit_costs_two_redis_round_trips_and_no_sql_then_one(
    tenant, catalog, redis_round_trips, django_assert_num_queries
):
    # A new sign-in: this process has not resolved the person yet.
    client = editor_client(tenant)
    for label, url in catalog.items():
        warm = client.get(url)  # a miss: the view computes and stores the entry
        assert warm.status_code == 200, label
        for headers in ({}, {"HTTP_IF_NONE_MATCH": warm["ETag"]}, {}):
            redis_round_trips.clear()
            with django_assert_num_queries(0):
                response = client.get(url, **headers)
            assert response.status_code == (304 if headers else 200), label
            assert len(redis_round_trips) <= 2, (label, redis_round_trips)
        # By now the person's principal and the entry are known to the process: the rate
        # limit's script alone, which also checks that both still hold.
        assert commands_of(redis_round_trips) == [b"EVALSHA"], (label, redis_round_trips)


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
    owner = APIClient()
    sign_in(owner, owner_of(tenant), tenant)
    return key_client(create_key(owner, ["catalog.read"])["key"])


def test_an_api_keys_hit_costs_the_same_two_round_trips(
    tenant, catalog, redis_round_trips, django_assert_num_queries
):
    machine = catalog_reading_key(tenant)
    for label, url in catalog.items():
        assert machine.get(url).status_code == 200, label  # learns the key's tenant, warms
        assert machine.get(url).status_code == 200, label
        redis_round_trips.clear()
        with django_assert_num_queries(0):
            assert machine.get(url).status_code == 200, label
        assert commands_of(redis_round_trips) == [b"MGET", b"EVALSHA"], label


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
    viewer = member_with_role(tenant, "viewer")
    client = APIClient()
    sign_in(client, viewer, tenant)
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
    # Verified tokens are remembered per process (tenants/authentication.py); expiry is not.
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
    for label, url in {
        "a list": f"{PRODUCTS}?page_size=3",
        "a detail": f"{catalog['product detail']}?fields=id,sku",
    }.items():
        redis_round_trips.clear()
        assert client.get(url).status_code == 200, label
        # The early path's script (the rate limit, with the version) and its look for the
        # entry; then the view authenticates and computes under that version, without reading
        # it or looking for the entry again: the stampede lock, the entry, the lock released.
        assert commands_of(redis_round_trips) == [
            b"EVALSHA",
            b"GET",
            b"MGET",
            b"SET",
            b"SET",
            b"DEL",
        ], label
    machine = catalog_reading_key(tenant)
    machine.get(catalog["product list"])  # the process learns the key's tenant
    redis_round_trips.clear()
    assert machine.get(f"{PRODUCTS}?page_size=4").status_code == 200
    # An API key's MGET (the key, and the version), the script that looks for the entry, then
    # the view's authentication and the same three commands.
    assert commands_of(redis_round_trips) == [b"MGET", b"EVALSHA", b"MGET", b"SET", b"SET", b"DEL"]
