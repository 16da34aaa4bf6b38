"""Cursor pagination (kernel/pagination.py), the default of every list, through the catalog
lists."""

import base64
import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from catalog.models import Product
from kernel.context import tenant_context
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    make_category,
    make_product,
)
from tests.helpers import error_fields

# The pro plan: its per-credential rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

PRICES = [Decimal("5.00"), Decimal("1.00"), Decimal("3.00")]  # many ties on purpose


def make_products(tenant, count: int) -> list[Product]:
    with tenant_context(tenant.id):
        return Product.objects.bulk_create(
            Product(
                sku=f"P-{n:03d}",
                name=f"Product {n % 7}",  # ties on name too
                price=PRICES[n % len(PRICES)],
                currency="EUR",
                stock=n,
            )
            for n in range(count)
        )


def walk(client, url: str, direction: str = "next") -> list[list[str]]:
    """Every page from `url` on, following `direction` links, as lists of ids."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([item["id"] for item in body["results"]])
        url = body[direction]
    return pages


def test_the_default_page_has_25_and_links_onward(tenant, editor):
    make_products(tenant, 30)

    body = editor.get(PRODUCTS).json()

    assert len(body["results"]) == 25
    assert body["previous"] is None
    assert body["next"].startswith("http://testserver/api/v1/products/?")
    assert len(editor.get(body["next"]).json()["results"]) == 5


@pytest.mark.parametrize(("asked", "given"), [(1, 1), (100, 100), (101, 100), (100000, 100)])
def test_page_size_is_clamped_to_100(tenant, editor, asked, given):
    make_products(tenant, 105)

    body = editor.get(PRODUCTS, {"page_size": asked}).json()

    assert len(body["results"]) == given


@pytest.mark.parametrize("size", ["0", "-5", "ten", "1.5"])
def test_a_page_size_that_is_not_a_positive_integer_is_a_400(editor, size):
    assert error_fields(editor.get(PRODUCTS, {"page_size": size})) == {"page_size"}


@pytest.mark.parametrize("ordering", ["price", "-price", "name", "-name", "-created_at", "sku"])
def test_walking_next_and_back_sees_every_row_once_in_order(tenant, editor, ordering):
    products = make_products(tenant, 57)
    field = ordering.lstrip("-")
    expected = sorted(products, key=lambda p: (getattr(p, field), str(p.id)))
    if ordering.startswith("-"):
        expected.reverse()  # the id tie-break follows the direction of the ordering

    pages = walk(editor, f"{PRODUCTS}?ordering={ordering}&page_size=10")

    seen = [product_id for page in pages for product_id in page]
    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 7]
    assert seen == [str(p.id) for p in expected]

    # From the last page back to the first, through the previous links.
    last = editor.get(f"{PRODUCTS}?ordering={ordering}&page_size=10")
    for _ in range(5):
        last = editor.get(last.json()["next"])
    backwards = walk(editor, last.json()["previous"], direction="previous")
    assert backwards == list(reversed(pages[:-1]))


def test_rows_added_meanwhile_are_neither_repeated_nor_skip_others(tenant, editor):
    make_products(tenant, 20)
    first = editor.get(PRODUCTS, {"ordering": "sku", "page_size": 10}).json()

    make_product(tenant, sku="A-000")  # sorts before everything already seen
    second = editor.get(first["next"]).json()

    first_ids = {item["id"] for item in first["results"]}
    assert [item["sku"] for item in second["results"]] == [f"P-{n:03d}" for n in range(10, 20)]
    assert not first_ids & {item["id"] for item in second["results"]}


def test_links_keep_the_filters_and_the_ordering(tenant, editor):
    make_products(tenant, 12)

    body = editor.get(PRODUCTS, {"ordering": "-price", "in_stock": "true", "page_size": 5}).json()
    query = parse_qs(urlsplit(body["next"]).query)

    assert query["ordering"] == ["-price"]
    assert query["in_stock"] == ["true"]
    assert query["page_size"] == ["5"]
    assert "cursor" in query


def _cursor_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["cursor"][0]


def _encode(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_invalid_cursors_are_a_400(tenant, editor):
    make_products(tenant, 3)
    by_price = editor.get(PRODUCTS, {"ordering": "price", "page_size": 1}).json()
    price_cursor = _cursor_of(by_price["next"])

    for params in (
        {"cursor": "not base64 !"},
        {"cursor": _encode({"hello": "world"})[:-2]},
        {"cursor": base64.urlsafe_b64encode(b"not json").decode()},
        {"cursor": _encode({"hello": "world"})},
        {"cursor": _encode({"o": "price,id", "v": ["x", "y"], "r": 0}), "ordering": "price"},
        {"cursor": _encode({"o": "price,id", "v": ["1"], "r": 0}), "ordering": "price"},
        {"cursor": _encode({"o": "price,id", "v": ["1", "no-uuid"], "r": 2}), "ordering": "price"},
        {"cursor": "A" * 2000},
        # A real cursor, but made for another ordering.
        {"cursor": price_cursor, "ordering": "name"},
    ):
        assert error_fields(editor.get(PRODUCTS, params)) == {"cursor"}, params


def test_an_empty_list_has_no_links(editor):
    assert editor.get(PRODUCTS).json() == {"results": [], "next": None, "previous": None}


def test_other_lists_use_the_same_pagination(tenant, editor):
    for name in ("A", "B", "C"):
        make_category(tenant, name=name)

    pages = walk(editor, f"{CATEGORIES}?page_size=2")

    assert [len(page) for page in pages] == [2, 1]
    assert error_fields(editor.get(CATEGORIES, {"cursor": "junk"})) == {"cursor"}
