"""Idempotency-Key on POST, through the product and category endpoints.

Each request runs in its own captured on-commit block, so that the record of a successful
response is stored as it is after a real commit.
"""

import hashlib

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from catalog import services
from kernel.context import tenant_context
from kernel.idempotency import REPLAYED_HEADER
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    editor_client,
    product_body,
    product_count,
)
from tests.factories import make_tenant
from tests.helpers import assert_problem, client_for, error_fields, member_with_role, owner_of

# The pro plan: its per-credential rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    """POST as a request in production would: its on-commit work runs when it returns."""

    def send(client, path, body, key=None, **extra):
        headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(path, body, format="json", **headers, **extra)

    return send


def test_a_retry_replays_the_first_response_and_creates_nothing(tenant, editor, post):
    body = product_body(sku="IDEM-1")

    first = post(editor, PRODUCTS, body, key="order-42")
    retry = post(editor, PRODUCTS, body, key="order-42")

    assert first.status_code == 201
    assert REPLAYED_HEADER not in first
    assert retry.status_code == 201
    assert retry[REPLAYED_HEADER] == "true"
    assert retry.json() == first.json()
    assert retry["Location"] == first["Location"]
    assert retry["ETag"] == first["ETag"]
    assert product_count(tenant) == 1


def test_the_same_json_in_another_key_order_is_the_same_request(tenant, editor, post):
    first = post(editor, PRODUCTS, {"sku": "K-1", "name": "K", "price": "1.00"}, key="k")
    retry = post(editor, PRODUCTS, {"price": "1.00", "name": "K", "sku": "K-1"}, key="k")

    assert retry[REPLAYED_HEADER] == "true"
    assert retry.json()["id"] == first.json()["id"]


def test_the_same_key_with_another_body_is_422(tenant, editor, post):
    post(editor, PRODUCTS, product_body(sku="A-1"), key="reused")

    response = post(editor, PRODUCTS, product_body(sku="B-1"), key="reused")

    assert_problem(response, 422, "idempotency-key-reused")
    assert product_count(tenant) == 1


def test_the_same_key_on_another_endpoint_is_422(tenant, editor, post):
    post(editor, PRODUCTS, product_body(), key="shared")

    response = post(editor, CATEGORIES, {"name": "Shoes"}, key="shared")

    assert_problem(response, 422, "idempotency-key-reused")


def test_a_request_still_running_makes_a_retry_409(tenant, editor, post, monkeypatch):
    # The retries arrive while the first request is inside its service: they are sent from
    # there, by the same client (the key is claimed per credential).
    body = product_body(sku="SLOW-1")
    retries = {}
    create = services.product_create

    def slow_create(**kwargs):
        retries["same body"] = post(editor, PRODUCTS, body, key="in-flight")
        retries["other body"] = post(editor, PRODUCTS, product_body(), key="in-flight")
        return create(**kwargs)

    monkeypatch.setattr(services, "product_create", slow_create)
    first = post(editor, PRODUCTS, body, key="in-flight")

    assert first.status_code == 201
    assert_problem(retries["same body"], 409, "idempotency-key-in-use")
    assert_problem(retries["other body"], 422, "idempotency-key-reused")
    assert product_count(tenant) == 1


def test_an_error_response_is_not_stored_and_the_key_can_be_used_again(tenant, editor, post):
    refused = post(editor, PRODUCTS, product_body(price="-1"), key="fix-and-retry")
    fixed = post(editor, PRODUCTS, product_body(price="1"), key="fix-and-retry")

    assert error_fields(refused) == {"price"}
    assert fixed.status_code == 201
    assert REPLAYED_HEADER not in fixed
    assert product_count(tenant) == 1


def test_a_conflict_is_not_stored_either(tenant, editor, post):
    post(editor, PRODUCTS, product_body(sku="TAKEN"))

    conflict = post(editor, PRODUCTS, product_body(sku="TAKEN", name="x"), key="c")
    retry = post(editor, PRODUCTS, product_body(sku="FREE", name="x"), key="c")

    assert_problem(conflict, 409, "conflict")
    assert retry.status_code == 201


def test_keys_are_scoped_to_the_credential_and_the_tenant(tenant, editor, post):
    colleague = editor_client(tenant)
    other_tenant = make_tenant()
    stranger = editor_client(other_tenant)
    body = product_body(sku="SCOPE-1")

    responses = [post(client, PRODUCTS, body, key="same") for client in (editor, colleague)]
    responses.append(post(stranger, PRODUCTS, body, key="same"))

    # The colleague's identical request is a second request of their own: here a duplicate SKU.
    assert responses[0].status_code == 201
    assert_problem(responses[1], 409, "conflict")
    assert responses[2].status_code == 201
    assert all(REPLAYED_HEADER not in response for response in responses)
    assert product_count(other_tenant) == 1


@pytest.mark.parametrize(("key", "ok"), [("k" * 255, True), ("k" * 256, False), ("", False)])
def test_the_key_length_is_bounded(tenant, editor, post, key, ok):
    response = post(editor, PRODUCTS, product_body(), key=key)

    if ok:
        assert response.status_code == 201
    else:
        assert error_fields(response) == {"Idempotency-Key"}
        assert product_count(tenant) == 0


def test_a_key_with_control_characters_is_refused(tenant, editor, post):
    response = post(editor, PRODUCTS, product_body(), key="bad\tkey")

    assert error_fields(response) == {"Idempotency-Key"}


def test_records_are_kept_for_24_hours(tenant, post):
    if not hasattr(cache, "ttl"):
        pytest.skip("needs the Redis cache (REDIS_URL)")
    user = member_with_role(tenant, "editor")
    post(client_for(user, tenant), PRODUCTS, product_body(), key="ttl")

    with tenant_context(tenant.id):
        ttl = cache.ttl(f"idempotency:user:{user.pk}:{hashlib.sha256(b'ttl').hexdigest()}")

    assert 24 * 3600 - 60 < ttl <= 24 * 3600


def test_without_a_key_every_post_is_new(tenant, editor, post):
    post(editor, PRODUCTS, product_body(sku="NO-KEY-1"))
    second = post(editor, PRODUCTS, product_body(sku="NO-KEY-1"))

    assert_problem(second, 409, "conflict")


def test_an_unreachable_store_refuses_with_503(tenant, editor, post, throwaway_redis, settings):
    if "redis" not in str(settings.CACHES["default"]["BACKEND"]).lower():
        pytest.skip("needs the Redis cache")
    throwaway_redis.stop()
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": throwaway_redis.url(0)},
    }

    response = post(editor, PRODUCTS, product_body(), key="down")
    without_key = post(editor, PRODUCTS, product_body())

    assert_problem(response, 503, "service-unavailable")
    assert response["Retry-After"] == "5"
    assert without_key.status_code == 201
    assert product_count(tenant) == 1


def test_an_api_key_has_records_of_its_own(tenant, post):
    owner = client_for(owner_of(tenant), tenant)
    created = owner.post(
        "/api/v1/api-keys/",
        {"name": "shop sync", "permissions": ["catalog.read", "catalog.write"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {created.json()['key']}")

    machine_body = product_body(sku="MACHINE-1")

    by_person = post(owner, PRODUCTS, product_body(sku="PERSON-1"), key="nightly")
    by_key = post(machine, PRODUCTS, machine_body, key="nightly")
    replayed = post(machine, PRODUCTS, machine_body, key="nightly")

    assert by_person.status_code == 201
    assert by_key.status_code == 201  # not a 422: another credential's key
    assert replayed[REPLAYED_HEADER] == "true"
    assert replayed.json()["id"] == by_key.json()["id"]
    assert product_count(tenant) == 2
