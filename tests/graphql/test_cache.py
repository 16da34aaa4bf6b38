"""Catalog reads over GraphQL answered from the catalog cache, as REST's are: the same document
again costs no SQL, every write is seen at once, and nothing is served to whom it is not for."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.catalog_helpers import (
    client_without_catalog_read,
    editor_client,
    make_category,
    make_product,
    product_url,
)
from tests.factories import make_tenant
from tests.graphql.conftest import data_of, error_codes, gql

pytestmark = pytest.mark.django_db

PAGE = "query Page($first: Int!) { products(first: $first) { edges { node { id sku stock } } } }"


def skus(data) -> list[str]:
    return [edge["node"]["sku"] for edge in data["products"]["edges"]]


def test_the_same_document_again_is_answered_without_sql_and_alike(
    tenant, django_assert_num_queries
):
    client = editor_client(tenant)
    make_product(tenant, sku="A-1")
    first = gql(client, PAGE, {"first": 5})

    with django_assert_num_queries(0):
        again = gql(client, PAGE, {"first": 5})

    assert again.json() == first.json()
    assert skus(data_of(again)) == ["A-1"]
    # Still a request of its own: counted by the rate limit, with its own id.
    assert int(again["RateLimit-Remaining"]) < int(first["RateLimit-Remaining"])
    assert again["X-Request-ID"] != first["X-Request-ID"]


def test_other_variables_are_another_entry(tenant):
    client = editor_client(tenant)
    for index in range(3):
        make_product(tenant, sku=f"V-{index}")
    data_of(gql(client, PAGE, {"first": 1}))

    assert len(skus(data_of(gql(client, PAGE, {"first": 2})))) == 2
    assert len(skus(data_of(gql(client, PAGE, {"first": 1})))) == 1


def test_a_write_through_either_surface_is_seen_by_the_next_read(tenant):
    client = editor_client(tenant)
    product = make_product(tenant, sku="W-1", stock=3)
    assert data_of(gql(client, PAGE, {"first": 5}))["products"]["edges"][0]["node"]["stock"] == 3

    client.patch(product_url(product.id), {"stock": 4}, format="json")
    assert data_of(gql(client, PAGE, {"first": 5}))["products"]["edges"][0]["node"]["stock"] == 4

    data_of(
        gql(
            client,
            "mutation($id: UUID!) { productUpdate(id: $id, input: {stock: 5}) { id } }",
            {"id": str(product.id)},
        )
    )
    assert data_of(gql(client, PAGE, {"first": 5}))["products"]["edges"][0]["node"]["stock"] == 5


def test_a_cached_answer_is_not_served_to_a_caller_without_catalog_read(tenant):
    make_product(tenant, sku="P-1")
    data_of(gql(editor_client(tenant), PAGE, {"first": 5}))
    data_of(gql(editor_client(tenant), PAGE, {"first": 5}))  # answered from the cache

    response = gql(client_without_catalog_read(tenant), PAGE, {"first": 5})

    assert error_codes(response) == ["FORBIDDEN"]
    assert "P-1" not in response.content.decode()


def test_a_cached_answer_is_never_another_tenants(tenant):
    make_product(tenant, sku="MINE-1")
    data_of(gql(editor_client(tenant), PAGE, {"first": 5}))
    data_of(gql(editor_client(tenant), PAGE, {"first": 5}))

    other = make_tenant()
    make_product(other, sku="THEIRS-1")

    assert skus(data_of(gql(editor_client(other), PAGE, {"first": 5}))) == ["THEIRS-1"]


def test_a_costly_document_runs_every_time_and_is_charged_its_cost(tenant):
    client = editor_client(tenant)
    category = make_category(tenant)
    for index in range(30):
        make_product(tenant, sku=f"C-{index}", category=category, tags=["a"])
    costly = "{ products(first: 30) { edges { node { sku related { sku } } } } }"
    data_of(gql(client, costly))
    before = int(gql(client, PAGE, {"first": 1})["RateLimit-Remaining"])

    with CaptureQueriesContext(connection) as queries:
        response = gql(client, costly)

    assert len(data_of(response)["products"]["edges"]) == 30
    assert any("catalog_product" in query["sql"] for query in queries.captured_queries)
    # 1 + 30 + 30 + 150 objects: two tokens, and the following read one more.
    assert int(gql(client, PAGE, {"first": 1})["RateLimit-Remaining"]) <= before - 3


def test_a_mutation_is_never_answered_from_the_cache(tenant):
    client = editor_client(tenant)
    create = "mutation($in: ProductCreateInput!) { productCreate(input: $in) { sku } }"
    new_product = {"in": {"sku": "M-1", "name": "M", "price": "1"}}
    assert data_of(gql(client, create, new_product)) == {"productCreate": {"sku": "M-1"}}

    response = gql(client, create, new_product)

    assert error_codes(response) == ["CONFLICT"]
