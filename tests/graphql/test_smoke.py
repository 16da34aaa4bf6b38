import pytest

from tests.catalog_helpers import editor_client, make_category, make_product
from tests.graphql.conftest import data_of, error_codes, gql

pytestmark = pytest.mark.django_db


def test_products_page(tenant):
    client = editor_client(tenant)
    category = make_category(tenant)
    for index in range(3):
        make_product(tenant, sku=f"S-{index}", category=category, tags=["a"])
    response = gql(
        client,
        "{ products(first: 2) { edges { cursor node { id sku price createdAt category { name } "
        "related { sku } } } pageInfo { hasNextPage endCursor } totalCount } }",
    )
    data = data_of(response)
    print(data)
    assert len(data["products"]["edges"]) == 2
    assert data["products"]["totalCount"] == 3


def test_no_credential(api_client):
    response = gql(api_client, "{ products { totalCount } }")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_not_found_and_create(tenant):
    client = editor_client(tenant)
    response = gql(client, '{ product(id: "00000000-0000-0000-0000-000000000000") { id } }')
    assert error_codes(response) == ["NOT_FOUND"], response.json()
    response = gql(
        client,
        "mutation($in: ProductCreateInput!) { productCreate(input: $in) { id sku price } }",
        {"in": {"sku": "X-1", "name": "X", "price": "-1"}},
    )
    print(response.json())
    assert error_codes(response) == ["BAD_USER_INPUT"]
    response = gql(
        client,
        "mutation($in: ProductCreateInput!) { productCreate(input: $in) { id sku price } }",
        {"in": {"sku": "X-1", "name": "X", "price": "1.50"}},
    )
    print(response.json(), dict(response.items()))
    assert data_of(response)["productCreate"]["price"] == "1.50"
