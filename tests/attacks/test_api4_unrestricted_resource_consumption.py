"""OWASP API4:2023, unrestricted resource consumption.

Proves that one client cannot make the API do unbounded work: a page is at most 100 rows whatever
`page_size` asks; a body over the limit is a 413 before any view reads it, and so is an import
file over its own limit; a tenant past its plan's burst gets 429 with `Retry-After`; and a JSON
body nested deeper than the parser can follow (in a request, a cursor or a WebSocket message), or
attributes nested past their documented depth, are refused as invalid input, never a 500 or a
dropped socket.

The source review's cases of this category (docs/security.md) are proven where they live: a 60 MB
body taken in by the WebSocket server before its 413, and 9 MB frames parsed before authentication
(finding 3, tests/system/test_asgi_server.py); tenant settings nested 458 deep (9,
tests/accounts/test_tenant_api.py); `/readyz` opening connections for anyone who asks (12,
tests/kernel/test_health.py).
"""

import asyncio
import base64
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Product
from kernel.context import tenant_context
from notifications.consumers import NotificationConsumer
from tests.attacks.support import Tenancy, tenancy
from tests.catalog_helpers import CATEGORIES, PRODUCTS, product_body
from tests.helpers import API, ME, assert_problem, client_for, error_fields, owner_of
from tests.kernel.test_ratelimit import assert_rate_limited, make_plan, tenant_on_plan

pytestmark = pytest.mark.django_db

# Every JSON route a client can send a body to, one of each kind of view.
JSON_WRITES = [
    ("post", PRODUCTS),
    ("post", CATEGORIES),
    ("post", f"{API}/webhooks/"),
    ("put", f"{API}/notification-preferences/"),
    ("patch", f"{API}/tenant/"),
    ("post", f"{API}/auth/signup/"),
    ("post", f"{API}/auth/token/"),
    ("post", f"{API}/invitations/accept/"),
]


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Consumer")


def test_a_page_is_never_more_than_100_rows(own):
    # Given more products than the largest page
    with tenant_context(own.tenant.id):
        Product.objects.bulk_create(
            Product(sku=f"SKU-{n}", name=f"P{n}", price="1.00", currency="EUR") for n in range(101)
        )

    # When a client asks for far more in one page
    response = own.client.get(PRODUCTS, {"page_size": 100_000})

    # Then it gets 100, and a link to the rest
    assert response.status_code == 200, response.content
    assert len(response.json()["results"]) == 100
    assert response.json()["next"]


@pytest.mark.parametrize("page_size", ["0", "-1", "1e9", "abc", "2.5"])
def test_a_page_size_that_is_no_positive_integer_is_a_400(own, page_size):
    response = own.client.get(PRODUCTS, {"page_size": page_size})

    assert_problem(response, 400)


@pytest.mark.parametrize(("method", "url"), JSON_WRITES)
def test_a_body_over_the_limit_is_413(own, settings, method, url):
    settings.MAX_REQUEST_BODY_BYTES = 10_000
    body = '{"name": "' + "x" * 20_000 + '"}'

    response = getattr(own.client, method)(url, body, content_type="application/json")

    assert_problem(response, 413, "payload-too-large")


def test_an_import_file_over_its_limit_is_413(own, settings):
    settings.CATALOG_IMPORT_MAX_BYTES = 1_000
    text = "sku,name,price\n" + "".join(f"S-{n},Name {n},1.00\n" for n in range(200))
    upload = SimpleUploadedFile("products.csv", text.encode(), content_type="text/csv")

    response = own.client.post(f"{API}/products/import/", {"file": upload}, format="multipart")

    assert_problem(response, 413, "payload-too-large")


def test_past_the_burst_a_tenant_gets_429_with_retry_after(settings):
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    tenant = tenant_on_plan(make_plan(burst=3))
    client = client_for(owner_of(tenant), tenant)

    responses = [client.get(ME) for _ in range(5)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert assert_rate_limited(responses[-1]) <= 60


@pytest.mark.parametrize(("method", "url"), JSON_WRITES)
@pytest.mark.parametrize("shape", ["array", "object"])
def test_a_body_nested_past_the_parsers_depth_is_a_400(own, method, url, shape):
    # Given a small body (well under the size limit) nested 50,000 levels deep
    depth = 50_000
    body = "[" * depth + "]" * depth if shape == "array" else '{"a":' * depth + "1" + "}" * depth

    # When it is sent to a JSON route
    response = getattr(own.client, method)(url, body, content_type="application/json")

    # Then it is a malformed body, not a crash
    assert_problem(response, 400)


def test_attributes_nested_past_their_depth_are_a_field_error(own):
    attributes: dict = {"leaf": 1}
    for _ in range(10):
        attributes = {"inner": attributes}

    response = own.client.post(
        PRODUCTS,
        product_body(sku=f"N-{uuid.uuid4().hex[:6]}", attributes=attributes),
        format="json",
    )

    assert error_fields(response) == {"attributes"}


def test_a_huge_flat_body_within_the_limit_is_refused_by_validation_not_stored(own):
    # 900 KB of tags: under the body limit, far over what a product may carry.
    tags = [f"t{n}" for n in range(100_000)]

    response = own.client.post(PRODUCTS, product_body(tags=tags), format="json")

    assert error_fields(response) == {"tags"}


def test_a_cursor_nested_as_deep_as_its_length_allows_is_a_400(own):
    # The cursor is base64 of JSON, up to 1,024 characters: as deep as a client can make it.
    nested = base64.urlsafe_b64encode(b"[" * 760 + b"]" * 8).decode().rstrip("=")[:1024]

    response = own.client.get(PRODUCTS, {"cursor": nested})

    assert_problem(response, 400)


def test_a_websocket_message_nested_past_the_parsers_depth_is_an_invalid_message():
    # Given the consumer's own decoding step (the socket then answers `invalid-message` for None)
    consumer = NotificationConsumer()

    decoded = asyncio.run(consumer.decode_json("[" * 100_000 + "]" * 100_000))

    # Then it is an unreadable message, not an exception that would drop the socket
    assert decoded is None
