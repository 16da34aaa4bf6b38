"""GraphQL's catalog reads against REST's: the same fields, the same filters and orderings, the
same cursors, the same refusals, and a page whose SQL does not grow with its size."""

from typing import Any
from urllib.parse import parse_qs, urlsplit

import graphql
import pytest
from strawberry.utils.str_converters import to_camel_case

from catalog.api.serializers import (
    CATEGORY_FIELDS,
    PRODUCT_DETAIL_FIELDS,
    RelatedProductSerializer,
)
from graphql_api.catalog import ProductOrder
from graphql_api.schema import schema
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    editor_client,
    make_category,
    make_product,
    product_url,
)
from tests.factories import make_tenant
from tests.graphql.conftest import data_of, error_codes, gql

# The enterprise plan: its rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="enterprise")]

# A page of products, as a shop front asks for it: what a naive resolver loads row by row.
PRODUCT_PAGE = """
query Page($first: Int!) {
  products(first: $first) {
    edges { node { id sku category { id name } tags related { id sku } } }
  }
}
"""
PRODUCT_PAGE_WITH_TOTAL = """
query Page($first: Int!) {
  products(first: $first) {
    totalCount
    edges { node { id sku category { id name } tags related { id sku } } }
  }
}
"""
# What a page of products costs, whatever its size: the savepoint pair of the request's
# transaction, the page (its categories joined to it), and every product's related items at once.
PRODUCT_PAGE_QUERIES = 4
CATEGORY_PAGE = """
query Page($first: Int!) {
  categories(first: $first) { edges { node { id name parent { name } } } }
}
"""
# The savepoint pair and the page, its parents joined to it.
CATEGORY_PAGE_QUERIES = 3

PRODUCT_DETAIL = """
query One($id: UUID!) {
  product(id: $id) {
    id sku name description price currency stock isActive tags attributes version createdAt
    updatedAt category { id name } related { id sku name price currency }
  }
}
"""
PRODUCT_IDS = """
query Ids($first: Int!, $after: String, $filter: ProductFilter, $orderBy: ProductOrder!) {
  products(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
DEFAULT_ORDER = "CREATED_AT_DESC"
# GraphQL's names of REST's query parameters, where they differ.
SNAKE_CASE = {"priceMin": "price_min", "priceMax": "price_max"}


def warmed(client):
    """`client` once authentication's own cache knows its credential: what every later request
    costs is then the request's own work."""
    data_of(gql(client, "{ products(first: 1) { edges { node { id } } } }"))
    return client


def graphql_ids(client, *, order_by: str = DEFAULT_ORDER, **arguments: Any) -> list[str]:
    variables = {"first": 100, "orderBy": order_by, **arguments}
    page = data_of(gql(client, PRODUCT_IDS, variables))["products"]
    assert page["pageInfo"]["hasNextPage"] is False  # the whole list, on one page
    return [edge["node"]["id"] for edge in page["edges"]]


def rest_ids(client, **params: Any) -> list[str]:
    response = client.get(PRODUCTS, {"page_size": 100, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next"] is None
    return [item["id"] for item in body["results"]]


def bad_input_fields(response) -> set[str]:
    """The fields a BAD_USER_INPUT answer names."""
    assert error_codes(response) == ["BAD_USER_INPUT"], response.json()
    (error,) = response.json()["errors"]
    return {entry["field"] for entry in error["extensions"]["errors"]}


def rest_error_fields(response) -> set[str]:
    assert response.status_code == 400, response.content
    return {entry["field"] for entry in response.json()["errors"]}


def cursor_of(link: str) -> str:
    """The `cursor` query parameter of a REST `next` (or `previous`) link."""
    return parse_qs(urlsplit(link).query)["cursor"][0]


# --- SQL: a page costs the same whatever its size -------------------------------------------


@pytest.fixture
def catalog_of_100(tenant):
    """100 products over three categories, sharing tags: every product has related items."""
    categories = [make_category(tenant) for _ in range(3)]
    for index in range(100):
        make_product(tenant, category=categories[index % 3], tags=["sale", f"group-{index % 4}"])
    return categories


@pytest.mark.parametrize("size", [1, 100])
def test_a_page_of_products_costs_the_same_sql_at_1_and_at_100(
    tenant, catalog_of_100, django_assert_num_queries, size
):
    client = warmed(editor_client(tenant))

    with django_assert_num_queries(PRODUCT_PAGE_QUERIES):
        response = gql(client, PRODUCT_PAGE, {"first": size})

    edges = data_of(response)["products"]["edges"]
    assert len(edges) == size
    assert all(edge["node"]["category"]["name"].startswith("Category") for edge in edges)
    assert all(len(edge["node"]["related"]) == 5 for edge in edges)
    assert all("sale" in edge["node"]["tags"] for edge in edges)


@pytest.mark.parametrize("size", [1, 100])
def test_a_catalog_of_1_or_100_products_costs_the_same_sql(tenant, django_assert_num_queries, size):
    # The whole catalog on one page, be it one product or a hundred
    categories = [make_category(tenant) for _ in range(3)]
    for index in range(size):
        make_product(tenant, category=categories[index % 3], tags=["sale"])
    client = warmed(editor_client(tenant))

    with django_assert_num_queries(PRODUCT_PAGE_QUERIES):
        response = gql(client, PRODUCT_PAGE, {"first": 100})

    assert len(data_of(response)["products"]["edges"]) == size


def test_total_count_costs_one_query_and_only_when_asked(
    tenant, catalog_of_100, django_assert_num_queries
):
    client = warmed(editor_client(tenant))

    with django_assert_num_queries(PRODUCT_PAGE_QUERIES):
        without = data_of(gql(client, PRODUCT_PAGE, {"first": 10}))["products"]
    with django_assert_num_queries(PRODUCT_PAGE_QUERIES + 1):
        counted = data_of(gql(client, PRODUCT_PAGE_WITH_TOTAL, {"first": 10}))["products"]

    assert "totalCount" not in without
    assert counted["totalCount"] == 100
    assert counted["edges"] == without["edges"]


@pytest.mark.parametrize("size", [1, 100])
def test_a_page_of_categories_with_their_parents_costs_the_same_sql(
    tenant, django_assert_num_queries, size
):
    roots = [make_category(tenant, name=f"Root {index}") for index in range(3)]
    for index in range(100):
        make_category(tenant, name=f"Child {index:03}", parent=roots[index % 3])
    client = warmed(editor_client(tenant))

    with django_assert_num_queries(CATEGORY_PAGE_QUERIES):
        response = gql(client, CATEGORY_PAGE, {"first": size})

    edges = data_of(response)["categories"]["edges"]
    assert len(edges) == size
    # Ordered by name: the children come first, each with its parent
    assert all(edge["node"]["parent"]["name"].startswith("Root") for edge in edges)


def test_a_page_gives_each_product_the_related_items_its_rest_detail_gives(tenant, editor):
    # Two categories; tags shared in various degrees; an inactive product (never related); a
    # product without a category (no related items)
    shoes, hats = make_category(tenant), make_category(tenant)
    tag_sets = [["a", "b", "c"], ["a", "b"], ["a"], ["c"], [], ["b", "c"], ["a", "c"], ["d"]]
    for index, tags in enumerate(tag_sets):
        make_product(tenant, category=shoes, tags=tags, name=f"Shoe {index}")
        make_product(tenant, category=hats, tags=tags[::-1], name=f"Hat {index}")
    make_product(tenant, category=shoes, tags=["a", "b", "c"], is_active=False)
    make_product(tenant, tags=["a"])

    query = (
        "{ products(first: 100) { edges { node { id related { id sku name price currency } } } } }"
    )
    edges = data_of(gql(editor, query))["products"]["edges"]

    assert len(edges) == 18
    for edge in edges:
        detail = editor.get(product_url(edge["node"]["id"]))
        assert detail.status_code == 200
        assert edge["node"]["related"] == detail.json()["related"], edge["node"]["id"]
    assert sum(1 for edge in edges if edge["node"]["related"]) == 17


# --- fields: the same product through both ---------------------------------------------------


def test_a_product_reads_the_same_through_rest_and_graphql(tenant, editor):
    parent = make_category(tenant, name="Clothes")
    category = make_category(tenant, name="Café ☕ T-shirts", parent=parent)
    product = make_product(
        tenant,
        sku="TEE-001",
        name="Café T-shirt ☕ 東京",
        description="Soft cotton.\nTwo lines.",
        price="19.99",
        currency="EUR",
        stock=3,
        category=category,
        tags=["cotton", "summer"],
        attributes={"color": "blue", "size": {"eu": 42, "us": 9.5}, "organic": True},
    )
    for index, tags in enumerate((["cotton", "summer"], ["summer"], [], ["cotton"])):
        make_product(tenant, sku=f"REL-{index}", price=f"{index}.50", category=category, tags=tags)
    make_product(tenant, sku="OFF-1", category=category, tags=["cotton"], is_active=False)
    make_product(tenant, sku="ELSEWHERE-1", category=parent, tags=["cotton", "summer"])

    rest = editor.get(product_url(product.id))
    node = data_of(gql(editor, PRODUCT_DETAIL, {"id": str(product.id)}))["product"]

    assert rest.status_code == 200
    rest_body = rest.json()
    assert set(rest_body) == set(PRODUCT_DETAIL_FIELDS)
    for name, value in rest_body.items():
        counterpart = node[to_camel_case(name)]
        if name == "category":
            assert counterpart["id"] == value == str(category.id)
            assert counterpart["name"] == "Café ☕ T-shirts"
        else:
            assert counterpart == value, name
    # The related items, in REST's order: those sharing the most tags first
    assert [item["sku"] for item in node["related"]] == ["REL-0", "REL-3", "REL-1", "REL-2"]
    assert node["isActive"] is True
    assert node["price"] == "19.99"


def test_a_category_reads_the_same_through_rest_and_graphql(tenant, editor):
    parent = make_category(tenant, name="Shoes")
    category = make_category(tenant, name="Bottes d'hiver ❄", parent=parent)
    query = """
    query One($id: UUID!) {
      category(id: $id) { id name slug createdAt updatedAt parent { id name } }
    }
    """

    rest = editor.get(f"{CATEGORIES}{category.id}/").json()
    node = data_of(gql(editor, query, {"id": str(category.id)}))["category"]

    assert set(rest) == set(CATEGORY_FIELDS)
    for name, value in rest.items():
        counterpart = node[to_camel_case(name)]
        if name == "parent":
            assert counterpart == {"id": value, "name": "Shoes"}
        else:
            assert counterpart == value, name


def test_every_rest_field_has_a_graphql_counterpart():
    # The schema as graphql-core reads the SDL that strawberry makes of graphql_api.schema
    types = graphql.build_schema(schema.as_str()).type_map

    for rest_fields, type_name in (
        (PRODUCT_DETAIL_FIELDS, "Product"),
        (CATEGORY_FIELDS, "Category"),
        (RelatedProductSerializer.Meta.fields, "RelatedProduct"),
    ):
        graphql_fields = set(types[type_name].fields)
        missing = {to_camel_case(name) for name in rest_fields} - graphql_fields
        assert missing == set(), f"{type_name} lacks {missing}"
    # The references are objects in GraphQL where REST gives their id
    for type_name, field in (("Product", "category"), ("Category", "parent")):
        reference = graphql.get_named_type(types[type_name].fields[field].type)
        assert reference.name == "Category"
        assert "id" in reference.fields


# --- lists: filters and orderings ------------------------------------------------------------


@pytest.fixture
def shop(tenant, editor):
    """A catalog a filter or an ordering can tell apart: a category tree, ties in prices, stock
    and no stock, inactive products, tags, unicode, and products updated after creation."""
    shoes = make_category(tenant, name="Shoes")
    boots = make_category(tenant, name="Boots", parent=shoes)
    hats = make_category(tenant, name="Hats")
    specs = [
        ("RUN-1", "Blue running shoe", "59.90", 5, True, shoes, ["sale", "blue"]),
        ("RUN-2", "Red running shoe", "79.00", 0, True, shoes, ["red"]),
        ("BOOT-1", "Winter boot", "120.00", 2, True, boots, ["sale", "winter"]),
        ("BOOT-2", "Rain boot", "59.90", 0, False, boots, ["rain"]),
        ("HAT-1", "Blue hat", "15.00", 9, True, hats, ["blue", "sale"]),
        ("HAT-2", "Sun hat", "15.00", 1, False, hats, []),
        ("CARD-1", "Gift card", "0.00", 100, True, None, []),
        ("MUG-1", "Café mug ☕", "12.50", 3, True, None, ["mug"]),
        ("MUG-2", "Tokyo mug 東京", "12.50", 0, True, None, ["mug", "sale"]),
    ]
    products = {
        sku: make_product(
            tenant,
            sku=sku,
            name=name,
            price=price,
            stock=stock,
            is_active=active,
            category=category,
            tags=tags,
        )
        for sku, name, price, stock, active, category, tags in specs
    }
    # Updated after everything was created: updated_at no longer follows created_at
    for sku in ("RUN-2", "HAT-1"):
        patched = editor.patch(product_url(products[sku].id), {"stock": 4}, format="json")
        assert patched.status_code == 200, patched.content
    return {"shoes": shoes, "boots": boots, "hats": hats, "products": products}


def test_each_ordering_lists_the_same_products_in_the_same_order(shop, editor):
    orderings = {member.name: member.value for member in ProductOrder}
    assert len(orderings) == 10

    for graphql_order, rest_order in orderings.items():
        expected = rest_ids(editor, ordering=rest_order)
        assert len(expected) == 9
        assert graphql_ids(editor, order_by=graphql_order) == expected, graphql_order
    # The default is REST's default too
    assert graphql_ids(editor) == rest_ids(editor)


def test_each_filter_selects_the_same_products_in_the_same_order(shop, editor, tenant):
    since = editor.get(product_url(shop["products"]["CARD-1"].id)).json()["updated_at"]
    other_tenants_category = make_category(make_tenant())
    shoes, boots = str(shop["shoes"].id), str(shop["boots"].id)
    cases = [
        ({"search": "blue"}, {"search": "blue"}),
        ({"search": "run sho"}, {"search": "run sho"}),
        ({"search": "東京"}, {"search": "東京"}),
        ({"category": shoes}, {"category": shoes}),  # with Boots, its subcategory
        ({"category": boots}, {"category": boots}),
        ({"price_min": "15", "price_max": "60"}, {"priceMin": "15", "priceMax": "60"}),
        ({"price_min": "59.90"}, {"priceMin": "59.90"}),
        ({"price_max": "12.5"}, {"priceMax": "12.5"}),
        ({"in_stock": "true"}, {"inStock": True}),
        ({"in_stock": "false"}, {"inStock": False}),
        ({"is_active": "true"}, {"isActive": True}),
        ({"is_active": "false"}, {"isActive": False}),
        ({"tag": "sale"}, {"tag": "sale"}),
        ({"updated_since": since}, {"updatedSince": since}),
        (
            {"tag": "sale", "in_stock": "true", "category": shoes},
            {"tag": "sale", "inStock": True, "category": shoes},
        ),
    ]
    everything = set(rest_ids(editor))

    for rest_params, graphql_filter in cases:
        for rest_order, graphql_order in (("-created_at", "CREATED_AT_DESC"), ("price", "PRICE")):
            expected = rest_ids(editor, ordering=rest_order, **rest_params)
            # Each filter selects some products, not all: a filter ignored would show
            assert 0 < len(expected) < len(everything), rest_params
            found = graphql_ids(editor, order_by=graphql_order, filter=graphql_filter)
            assert found == expected, graphql_filter
    # The subtree: Shoes holds Boots' products too
    by_category = rest_ids(editor, category=shoes)
    assert {str(shop["products"][sku].id) for sku in ("BOOT-1", "BOOT-2")} <= set(by_category)
    # Another tenant's category selects nothing, on both
    foreign = str(other_tenants_category.id)
    assert graphql_ids(editor, filter={"category": foreign}) == rest_ids(editor, category=foreign)
    assert rest_ids(editor, category=foreign) == []


@pytest.mark.parametrize(
    ("rest_params", "graphql_filter", "field"),
    [
        ({"price_min": "10", "price_max": "5"}, {"priceMin": "10", "priceMax": "5"}, "priceMax"),
        ({"price_min": "-1"}, {"priceMin": "-1"}, "priceMin"),
        ({"price_max": "-0.01"}, {"priceMax": "-0.01"}, "priceMax"),
        ({"price_min": "1" + "0" * 20}, {"priceMin": "1" + "0" * 20}, "priceMin"),
        ({"search": "x" * 201}, {"search": "x" * 201}, "search"),
        ({"search": "blue\x00"}, {"search": "blue\x00"}, "search"),
        ({"tag": "t" * 51}, {"tag": "t" * 51}, "tag"),
    ],
)
def test_invalid_filters_are_refused_as_rest_refuses_them(
    shop, editor, rest_params, graphql_filter, field
):
    rest = editor.get(PRODUCTS, rest_params)
    response = gql(editor, PRODUCT_IDS, {"first": 10, "orderBy": "PRICE", "filter": graphql_filter})

    assert bad_input_fields(response) == {field}
    assert rest_error_fields(rest) == {SNAKE_CASE.get(field, field)}
    assert response.json()["data"] is None
    extensions = response.json()["errors"][0]["extensions"]
    assert extensions["problem"].endswith("/validation-error")
    assert extensions["request_id"] == response["X-Request-ID"]


def test_a_search_of_200_characters_is_accepted_on_both(shop, editor):
    text = "blue " + "x" * 195

    assert graphql_ids(editor, filter={"search": text}) == rest_ids(editor, search=text) == []


# --- pagination --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["CREATED_AT_DESC", "PRICE", "NAME_DESC", "UPDATED_AT"])
def test_walking_every_page_gives_every_product_once_in_rests_order(shop, editor, order):
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        variables = {"first": 2, "orderBy": order, "after": after}
        page = data_of(gql(editor, PRODUCT_IDS, variables))["products"]
        pages += 1
        seen.extend(edge["node"]["id"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]
        assert pages < 10

    assert pages == 5
    assert len(seen) == len(set(seen)) == 9
    assert seen == rest_ids(editor, ordering=ProductOrder[order].value)


def test_a_rest_cursor_is_a_graphql_after_and_back(shop, editor):
    first_page = editor.get(PRODUCTS, {"ordering": "price", "page_size": 3}).json()
    rest_cursor = cursor_of(first_page["next"])
    second_page = editor.get(first_page["next"]).json()

    variables = {"first": 3, "orderBy": "PRICE", "after": rest_cursor}
    page = data_of(gql(editor, PRODUCT_IDS, variables))["products"]

    assert [edge["node"]["id"] for edge in page["edges"]] == [
        item["id"] for item in second_page["results"]
    ]
    # And GraphQL's cursor is a REST cursor: the third page, both ways
    third_rest = editor.get(second_page["next"]).json()
    via_graphql_cursor = editor.get(
        PRODUCTS, {"ordering": "price", "page_size": 3, "cursor": page["pageInfo"]["endCursor"]}
    ).json()
    assert via_graphql_cursor["results"] == third_rest["results"]
    assert len(third_rest["results"]) == 3


@pytest.mark.parametrize("after", ["garbage", "eyJvIjoiLXByaWNlIn0", "x" * 2000, "!!!", "bnVsbA"])
def test_a_garbage_after_is_refused_naming_after(shop, editor, after):
    response = gql(editor, PRODUCT_IDS, {"first": 3, "orderBy": "PRICE", "after": after})

    assert bad_input_fields(response) == {"after"}
    assert response.json()["data"] is None


def test_an_empty_after_is_the_first_page_as_an_empty_rest_cursor(shop, editor):
    response = gql(editor, PRODUCT_IDS, {"first": 3, "orderBy": "PRICE", "after": ""})

    found = [edge["node"]["id"] for edge in data_of(response)["products"]["edges"]]
    rest = editor.get(PRODUCTS, {"ordering": "price", "page_size": 3, "cursor": ""})
    assert found == [item["id"] for item in rest.json()["results"]]


def test_a_cursor_made_for_another_ordering_is_refused(shop, editor):
    by_price = editor.get(PRODUCTS, {"ordering": "price", "page_size": 3}).json()
    rest_cursor = cursor_of(by_price["next"])
    graphql_cursor = data_of(gql(editor, PRODUCT_IDS, {"first": 3, "orderBy": "PRICE"}))[
        "products"
    ]["pageInfo"]["endCursor"]

    for cursor in (rest_cursor, graphql_cursor):
        for order in ("PRICE_DESC", "NAME", "CREATED_AT_DESC"):
            response = gql(editor, PRODUCT_IDS, {"first": 3, "orderBy": order, "after": cursor})
            assert bad_input_fields(response) == {"after"}, order
        # REST refuses it as well, naming its own parameter
        refused = editor.get(PRODUCTS, {"ordering": "name", "cursor": cursor})
        assert rest_error_fields(refused) == {"cursor"}


@pytest.mark.parametrize("first", [0, -1])
def test_first_must_be_positive(shop, editor, first):
    response = gql(editor, PRODUCT_IDS, {"first": first, "orderBy": "PRICE"})

    assert bad_input_fields(response) == {"first"}
