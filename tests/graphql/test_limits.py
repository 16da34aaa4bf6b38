"""What a GraphQL document may ask for (graphql_api/limits.py), and what it costs.

A document over a limit (depth, cost, aliases, `first`, size) is refused whole with
QUERY_TOO_COMPLEX before anything runs: no resolver, so no SQL on the catalog and no write.
Fragments, inline fragments and variables are measured as what they expand to. A document within
the limits takes tokens by its cost from the same buckets as REST.

The rate-limit tests put the tenant on a plan of their own that refills one token a minute, so
that the counts they compare are exact whatever the clock does in between.
"""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from kernel.tenancy.models import Plan
from tests.catalog_helpers import make_category, make_product, product_count
from tests.factories import make_tenant
from tests.graphql.conftest import GRAPHQL_URL, data_of, error_codes, gql
from tests.helpers import ME, assert_problem, client_for, outcome, owner_of

# The free plan's burst is too small for a module of many requests per member.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def catalog_sql(client, query: str, variables: dict | None = None):
    """The response to the document, and the SQL it ran on the catalog's tables."""
    with CaptureQueriesContext(connection) as captured:
        response = gql(client, query, variables)
    return response, [q["sql"] for q in captured.captured_queries if "catalog_" in q["sql"]]


def assert_refused_unrun(client, query: str, variables: dict | None = None, *, because: str):
    """The document is refused as too complex, saying why, and no resolver ran (no SQL on the
    catalog)."""
    response, sql = catalog_sql(client, query, variables)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["data"] is None, body
    assert error_codes(response) == ["QUERY_TOO_COMPLEX"], body
    [error] = body["errors"]
    assert because in error["message"], body
    assert error["extensions"]["problem"].endswith("/validation-error")
    assert error["extensions"]["request_id"] == response["X-Request-ID"]
    assert sql == []
    return body


def parents(levels: int, leaf: str = "id") -> str:
    """`parent { parent { … leaf … } }`, `levels` deep."""
    return "parent { " * levels + leaf + " }" * levels


def category_doc(levels: int) -> str:
    """A document of depth `levels + 2`: category (1), `levels` parents, then the leaf."""
    return f"query($id: UUID!) {{ category(id: $id) {{ {parents(levels)} }} }}"


def aliased(count: int, field: str) -> str:
    return " ".join(f"a{index}: {field}" for index in range(count))


def page_doc(aliases: int) -> str:
    """`aliases` product pages of `$n` products with their categories: each costs 1 + 3n."""
    page = "products(first: $n) { edges { node { category { id } } } }"
    return f"query($n: Int!) {{ {aliased(aliases, page)} }}"


@pytest.fixture
def chain(tenant):
    """Eleven categories, each the parent of the next; the deepest one is returned."""
    category = None
    for _ in range(11):
        category = make_category(tenant, parent=category)
    return category


# --- within the limits -------------------------------------------------------------------------


def test_a_document_at_every_limit_runs(tenant, editor, chain):
    # Given products in the deepest category of a chain
    for _ in range(3):
        make_product(tenant, category=chain)

    # When a document asks for the deepest nesting, the most aliases of one field, and a page
    # of the largest size, all at their limits
    depth_ten = category_doc(8)
    deep_response, deep_sql = catalog_sql(editor, depth_ten, {"id": str(chain.id)})
    aliases_response, _ = catalog_sql(
        editor,
        f"query($id: UUID!) {{ {aliased(20, 'category(id: $id) { id }')} }}",
        {"id": str(chain.id)},
    )
    page_response, page_sql = catalog_sql(
        editor, "{ products(first: 100) { edges { node { sku category { id } } } } }"
    )

    # Then each is answered, and did read the catalog (what the refusals below never do)
    deep = data_of(deep_response)["category"]
    for _ in range(8):
        deep = deep["parent"]
    assert deep["id"]
    assert deep_sql
    assert list(data_of(aliases_response).values()) == [{"id": str(chain.id)}] * 20
    assert len(data_of(page_response)["products"]["edges"]) == 3
    assert page_sql


# --- depth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(category_doc(9), id="plain"),
        pytest.param(
            "query($id: UUID!) { category(id: $id) { ...Deep } } "
            f"fragment Deep on Category {{ {parents(9)} }}",
            id="named fragment",
        ),
        pytest.param(
            f"query($id: UUID!) {{ category(id: $id) {{ ... on Category {{ {parents(9)} }} }} }}",
            id="inline fragment",
        ),
        pytest.param(
            # Each fragment is shallow; only what they expand to is too deep.
            "query($id: UUID!) { category(id: $id) { ...A } } "
            f"fragment A on Category {{ {parents(3, '...B')} }} "
            f"fragment B on Category {{ {parents(3, '...C')} }} "
            f"fragment C on Category {{ ... {{ {parents(3)} }} }}",
            id="fragments within fragments",
        ),
        pytest.param(
            f"{{ products(first: 1) {{ edges {{ node {{ category {{ {parents(6)} }} }} }} }} }}",
            id="under a connection",
        ),
    ],
)
def test_a_document_one_level_too_deep_is_refused_before_it_runs(tenant, editor, chain, query):
    body = assert_refused_unrun(editor, query, {"id": str(chain.id)}, because="depth 11 exceeds 10")
    assert body["errors"][0]["extensions"]["depth"] == 11


def test_a_mutation_too_deep_writes_nothing(tenant, editor):
    mutation = (
        'mutation { productCreate(input: {sku: "DEEP-1", name: "Deep", price: "1.00"}) '
        f"{{ category {{ {parents(8)} }} }} }}"
    )

    assert_refused_unrun(editor, mutation, because="depth 11 exceeds 10")
    assert product_count(tenant) == 0


# --- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param(page_doc(4), {"n": 100}, id="first from a variable"),
        pytest.param(
            page_doc(4).replace("$n: Int!", "$n: Int = 100"), {}, id="first from its default"
        ),
        # JSON has no integers of its own: 100.0 is the Int 100 to GraphQL, and to the measure.
        pytest.param(page_doc(4), {"n": 100.0}, id="first as a JSON float"),
        pytest.param(
            "{ a: products(first: 100) { ...Page } b: products(first: 100) { ...Page } } "
            "fragment Page on ProductConnection { edges { node { ... on Product { "
            "category { id } related { id } } } } }",
            None,
            id="fragments",
        ),
    ],
)
def test_a_document_over_the_cost_is_refused_before_it_runs(editor, query, variables):
    body = assert_refused_unrun(editor, query, variables, because="exceeds 1000")
    assert body["errors"][0]["extensions"]["cost"] > 1000


def test_the_same_document_with_small_pages_runs(tenant, editor):
    make_product(tenant)

    response = gql(editor, page_doc(4), {"n": 10})

    assert len(data_of(response)) == 4
    assert all(len(page["edges"]) == 1 for page in data_of(response).values())


def test_a_mutation_over_the_cost_writes_nothing(tenant, editor, settings):
    # A mutation answers one object: only a lower limit lets two of them be over it.
    settings.GRAPHQL_MAX_COST = 5
    create = 'productCreate(input: {sku: "COST-1", name: "Costly", price: "1"}) { related { id } }'
    mutation = f"mutation {{ {aliased(2, create)} }}"

    assert_refused_unrun(editor, mutation, because="exceeds 5")
    assert product_count(tenant) == 0


# --- aliases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            f"query($id: UUID!) {{ {aliased(21, 'category(id: $id) { id }')} }}", id="plain"
        ),
        pytest.param(
            f"query($id: UUID!) {{ category(id: $id) {{ {aliased(21, 'name')} }} }}",
            id="of a scalar field",
        ),
        pytest.param(
            "query($id: UUID!) { ...Q ... on Query { x: category(id: $id) { id } } } "
            f"fragment Q on Query {{ {aliased(20, 'category(id: $id) { id }')} }}",
            id="spread over fragments",
        ),
    ],
)
def test_more_than_twenty_aliases_of_a_field_are_refused_before_they_run(editor, chain, query):
    assert_refused_unrun(editor, query, {"id": str(chain.id)}, because="21 aliases of")


def test_a_mutation_repeated_under_twenty_one_aliases_writes_nothing(tenant, editor):
    creates = " ".join(
        f'p{index}: productCreate(input: {{sku: "ALIAS-{index}", name: "A", price: "1"}}) {{ id }}'
        for index in range(21)
    )

    assert_refused_unrun(editor, f"mutation {{ {creates} }}", because="21 aliases of")
    assert product_count(tenant) == 0


def test_introspection_fields_are_not_counted(editor):
    # `__typename` reads the schema, not the database: no limit applies to it.
    response = gql(editor, f"{{ {aliased(50, '__typename')} }}")

    assert set(data_of(response).values()) == {"Query"}


# --- first -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ products(first: 101) { edges { cursor } } }", None),
        ("query($n: Int!) { products(first: $n) { edges { cursor } } }", {"n": 101}),
        ("query($n: Int!) { products(first: $n) { edges { cursor } } }", {"n": 2**31 - 1}),
        ("query($n: Int!) { products(first: $n) { edges { cursor } } }", {"n": 1000.0}),
    ],
)
def test_a_page_over_a_hundred_is_refused_before_it_runs(editor, query, variables):
    assert_refused_unrun(editor, query, variables, because="exceeds 100")


@pytest.mark.parametrize("first", [0, -1, -(2**31)])
def test_a_page_of_no_products_or_fewer_is_bad_input(tenant, editor, first):
    make_product(tenant)

    literal = gql(editor, f"{{ products(first: {first}) {{ edges {{ cursor }} }} }}")
    variable = gql(
        editor, "query($n: Int!) { products(first: $n) { edges { cursor } } }", {"n": first}
    )

    for response in (literal, variable):
        assert error_codes(response) == ["BAD_USER_INPUT"], response.json()
        [error] = response.json()["errors"]
        assert error["extensions"]["errors"][0]["field"] == "first"
        assert response.json()["data"] is None


# --- the document's size -----------------------------------------------------------------------


def test_a_document_over_the_size_limit_is_refused_before_it_runs(editor, settings):
    padding = " " * settings.GRAPHQL_MAX_DOCUMENT_BYTES
    assert_refused_unrun(editor, "{ products { totalCount } }" + padding, because="bytes")


def test_the_size_counts_bytes_not_characters(tenant, editor, settings):
    # Within the limit in characters, over it in UTF-8 bytes (each "é" is two).
    comment = "#" + "é" * (settings.GRAPHQL_MAX_DOCUMENT_BYTES // 2) + "\n"
    mutation = 'mutation { productCreate(input: {sku: "BIG-1", name: "B", price: "1"}) { id } }'
    assert len(comment + mutation) < settings.GRAPHQL_MAX_DOCUMENT_BYTES

    assert_refused_unrun(editor, comment + mutation, because="bytes")
    assert product_count(tenant) == 0


# --- cycles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "{ products { edges { node { ...A } } } } "
        "fragment A on Product { sku ...B } fragment B on Product { name ...A }",
        "{ products { edges { node { ...A } } } } fragment A on Product { ... { ...A } }",
    ],
)
def test_a_fragment_cycle_is_refused_without_running(editor, query):
    response, sql = catalog_sql(editor, query)

    assert response.json()["data"] is None
    assert error_codes(response) == ["BAD_USER_INPUT"]
    assert "within itself" in response.json()["errors"][0]["message"]
    assert sql == []


# --- the rate limit ----------------------------------------------------------------------------


def make_plan(*, burst: int) -> Plan:
    """A plan that refills one token a minute: what a test takes stays taken."""
    with outcome():
        return Plan.objects.create(
            code=f"gql-{uuid.uuid4().hex[:12]}", name="GraphQL", requests_per_minute=1, burst=burst
        )


@pytest.fixture
def owner_on_plan(settings):
    """A client of a tenant's owner, on a plan with the burst asked for, allowed all of it."""
    settings.RATELIMIT_CREDENTIAL_SHARE = 1

    def make(burst: int):
        tenant = make_tenant(plan_code=make_plan(burst=burst).code)
        return tenant, client_for(owner_of(tenant), tenant)

    return make


def remaining(response) -> int:
    assert all(name in response for name in RATE_HEADERS), dict(response.items())
    return int(response["RateLimit-Remaining"])


CHEAP = "{ products(first: 1) { totalCount } }"
# 1 connection + 100 edges + 100 nodes + 100 categories + 500 related (5 per product) = 801.
COSTLY = "{ products(first: 100) { edges { node { category { id } related { id } } } } }"
COSTLY_COST = 801


def test_graphql_takes_tokens_from_the_rest_buckets_by_cost(owner_on_plan, settings):
    tenant, client = owner_on_plan(100)
    make_product(tenant)

    # When REST, a cheap query, REST, a costly query and REST again are sent
    rest_before = client.get(ME)
    cheap = gql(client, CHEAP)
    rest_between = client.get(ME)
    costly = gql(client, COSTLY)
    rest_after = client.get(ME)

    # Then all answer, with the same headers as REST, counting down one shared bucket
    for response in (rest_before, rest_between, rest_after):
        assert response.status_code == 200
    data_of(cheap)
    data_of(costly)
    assert int(cheap["RateLimit-Limit"]) == int(rest_before["RateLimit-Limit"]) == 100
    assert remaining(rest_before) == 99
    cheap_drop = remaining(rest_before) - remaining(cheap)
    costly_drop = remaining(rest_between) - remaining(costly)
    assert cheap_drop == 1
    assert costly_drop == 1 + (COSTLY_COST - 1) // settings.GRAPHQL_COST_PER_TOKEN
    assert costly_drop > cheap_drop
    assert remaining(rest_between) == remaining(cheap) - 1
    assert remaining(rest_after) == remaining(costly) - 1


def test_an_empty_bucket_is_a_429_with_retry_after_and_nothing_runs(owner_on_plan):
    tenant, client = owner_on_plan(2)
    assert [client.get(ME).status_code for _ in range(2)] == [200, 200]

    response, sql = catalog_sql(
        client, 'mutation { productCreate(input: {sku: "RL-1", name: "R", price: "1"}) { id } }'
    )

    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert remaining(response) == 0
    assert response.json()["data"] is None
    assert error_codes(response) == ["RATE_LIMITED"]
    [error] = response.json()["errors"]
    assert error["extensions"]["problem"].endswith("/rate-limited")
    assert error["extensions"]["request_id"] == response["X-Request-ID"]
    assert sql == []
    assert product_count(tenant) == 0


def test_a_query_costing_more_than_is_left_is_refused_and_costs_nothing(owner_on_plan):
    # Given a bucket of 20 tokens of which 5 are left, and a query that takes 9 (a cost over
    # the whole bucket would be taken as the whole bucket: possible once it is full)
    _, client = owner_on_plan(20)
    assert [client.get(ME).status_code for _ in range(15)] == [200] * 15

    # When it is sent, then a cheap one
    costly = gql(client, COSTLY)
    cheap = gql(client, CHEAP)

    # Then the costly one is refused without taking anything, and the cheap one takes one
    assert costly.status_code == 429
    assert error_codes(costly) == ["RATE_LIMITED"]
    assert data_of(cheap)["products"]["totalCount"] == 0
    assert remaining(cheap) == 4


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{ products { ", id="does not parse"),
        pytest.param("{ products(first: 101) { totalCount } }", id="over a limit"),
        pytest.param("{ noSuchField }", id="invalid"),
    ],
)
def test_a_document_that_never_runs_still_takes_one_token(owner_on_plan, query):
    _, client = owner_on_plan(10)

    response = gql(client, query)

    assert response.status_code == 200
    assert response.json()["data"] is None
    assert remaining(response) == 9


def test_without_a_valid_credential_the_address_pays_a_token_before_graphql_runs(
    api_client, settings
):
    # Given a tiny allowance for requests without a valid credential
    settings.RATELIMIT_ANONYMOUS_RATE = (2, 3600)
    here = {"REMOTE_ADDR": "192.0.2.77"}
    query = {"query": "{ products { totalCount } }"}

    # When one address sends no credential, then a forged token, then a third request
    none = api_client.post(GRAPHQL_URL, query, format="json", **here)
    forged = api_client.post(
        GRAPHQL_URL, query, format="json", HTTP_AUTHORIZATION="Bearer forged", **here
    )
    third = api_client.post(GRAPHQL_URL, query, format="json", **here)

    # Then the first two are 401 problems (no GraphQL answer), each taking one of its tokens,
    # and the third is refused
    for response in (none, forged):
        body = assert_problem(response, 401, "not-authenticated")
        assert "errors" not in body
        assert "data" not in body
    assert [remaining(none), remaining(forged)] == [1, 0]
    assert_problem(third, 429, "rate-limited")
    assert int(third["Retry-After"]) >= 1
    # Another address has its own
    assert (
        api_client.post(GRAPHQL_URL, query, format="json", REMOTE_ADDR="192.0.2.78").status_code
        == 401
    )


def test_a_product_of_the_catalog_is_never_read_by_a_refused_document(tenant, editor):
    # A guard on the guard: the capture above does see the catalog when a document runs.
    product = make_product(tenant)

    response, sql = catalog_sql(
        editor, "query($id: UUID!) { product(id: $id) { sku } }", {"id": str(product.id)}
    )

    assert data_of(response)["product"]["sku"] == product.sku
    assert any(Product._meta.db_table in statement for statement in sql)
