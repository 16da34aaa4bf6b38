"""GraphQL's errors and its HTTP: every error in `errors[]` says what went wrong as REST's problem
does (`extensions.code`, `extensions.problem`, `extensions.request_id`), and what is no GraphQL
request at all is a problem+json, as on REST."""

import json

import pytest

from catalog import selectors
from tests.catalog_helpers import (
    make_category,
    make_product,
    product_count,
    stored_product,
    viewer_client,
)
from tests.factories import make_tenant
from tests.graphql.conftest import GRAPHQL_URL, data_of, error_codes, gql
from tests.helpers import assert_problem

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

PROBLEMS = "https://docs.example/problems/"
PRODUCT = "query($id: UUID!) { product(id: $id) { id sku } }"
CREATE = "mutation($in: ProductCreateInput!) { productCreate(input: $in) { id sku } }"
UPDATE = (
    "mutation($id: UUID!, $in: ProductUpdateInput!, $v: Int) "
    "{ productUpdate(id: $id, input: $in, expectedVersion: $v) { id name version } }"
)
DELETE = "mutation($id: UUID!, $v: Int) { productDelete(id: $id, expectedVersion: $v) { id } }"


def the_error(response, code: str, problem: str) -> dict:
    """The one error of the answer, with its code and problem type, and the request's id."""
    assert response.status_code == 200, response.content
    body = response.json()
    assert error_codes(response) == [code], body
    [error] = body["errors"]
    assert error["extensions"]["problem"] == PROBLEMS + problem
    assert error["extensions"]["request_id"] == response["X-Request-ID"]
    assert response["X-Request-ID"]
    return error


# --- NOT_FOUND ---------------------------------------------------------------------------------


def test_an_unknown_id_is_not_found(editor):
    response = gql(editor, PRODUCT, {"id": "00000000-0000-0000-0000-000000000000"})

    error = the_error(response, "NOT_FOUND", "not-found")
    assert error["path"] == ["product"]
    assert response.json()["data"] == {"product": None}


def test_another_tenants_product_is_not_found_for_every_operation(tenant, editor):
    # Given a product of another tenant, whose id the caller somehow knows
    theirs = make_product(make_tenant(), name="Theirs")
    ids = {"id": str(theirs.id)}

    # When the caller reads, changes and deletes it
    read = gql(editor, PRODUCT, ids)
    update = gql(editor, UPDATE, {**ids, "in": {"name": "Mine now"}})
    delete = gql(editor, DELETE, ids)

    # Then each is NOT_FOUND, exactly as an id that does not exist, and the product is intact
    unknown_id = "00000000-0000-0000-0000-000000000000"
    unknown = the_error(gql(editor, PRODUCT, {"id": unknown_id}), "NOT_FOUND", "not-found")
    for response in (read, update, delete):
        error = the_error(response, "NOT_FOUND", "not-found")
        assert error["message"] == unknown["message"].replace(unknown_id, str(theirs.id))
    stored = stored_product(theirs.id)
    assert stored.name == "Theirs"
    assert stored.version == theirs.version


# --- FORBIDDEN ---------------------------------------------------------------------------------


def test_a_viewers_mutation_is_forbidden_naming_the_permission(tenant):
    viewer = viewer_client(tenant)
    product = make_product(tenant)

    create = gql(viewer, CREATE, {"in": {"sku": "V-1", "name": "V", "price": "1"}})
    delete = gql(viewer, DELETE, {"id": str(product.id)})

    for response in (create, delete):
        error = the_error(response, "FORBIDDEN", "permission-denied")
        assert error["extensions"]["required_permission"] == "catalog.write"
        assert "catalog.write" in error["message"]
    assert product_count(tenant) == 1
    assert stored_product(product.id) is not None


# --- BAD_USER_INPUT ----------------------------------------------------------------------------


def test_invalid_input_names_each_field_as_graphql_spells_it(tenant, editor):
    response = gql(
        editor,
        CREATE,
        {"in": {"sku": "B-1", "name": "", "price": "-1", "stock": -5, "tags": ["x" * 51]}},
    )

    error = the_error(response, "BAD_USER_INPUT", "validation-error")
    fields = {entry["field"] for entry in error["extensions"]["errors"]}
    assert fields == {"name", "price", "stock", "tags.0"}
    assert all(entry["message"] and entry["code"] for entry in error["extensions"]["errors"])
    assert error["message"] == "4 fields are invalid."
    assert product_count(tenant) == 0


def test_field_errors_of_two_word_fields_are_in_camel_case(editor):
    response = gql(
        editor,
        'query { products(filter: {priceMin: "5", priceMax: "1"}) { totalCount } }',
    )

    error = the_error(response, "BAD_USER_INPUT", "validation-error")
    assert [entry["field"] for entry in error["extensions"]["errors"]] == ["priceMax"]
    negative = gql(editor, 'query { products(filter: {priceMin: "-1"}) { totalCount } }')
    error = the_error(negative, "BAD_USER_INPUT", "validation-error")
    assert [entry["field"] for entry in error["extensions"]["errors"]] == ["priceMin"]


def test_a_wrong_type_for_a_field_is_bad_input_before_anything_runs(tenant, editor):
    response = gql(
        editor, CREATE, {"in": {"sku": "T-1", "name": "T", "price": "1", "isActive": "yes"}}
    )

    error = the_error(response, "BAD_USER_INPUT", "malformed-request")
    assert "isActive" in error["message"]
    assert response.json()["data"] is None
    assert product_count(tenant) == 0


@pytest.mark.parametrize(
    ("field", "variables"),
    [
        ("search", {"filter": {"search": "\ud800"}}),
        ("tag", {"filter": {"tag": "\udfff"}}),
        ("search", {"filter": {"search": "a\x00b"}}),
    ],
)
def test_text_postgresql_cannot_hold_is_bad_input_not_a_crash(editor, field, variables):
    # JSON can carry a lone surrogate or a NUL; PostgreSQL refuses both.
    body = json.dumps(
        {
            "query": "query($filter: ProductFilter) { products(filter: $filter) { totalCount } }",
            "variables": variables,
        }
    )
    response = editor.generic("POST", GRAPHQL_URL, body, content_type="application/json")

    error = the_error(response, "BAD_USER_INPUT", "validation-error")
    assert {entry["field"] for entry in error["extensions"]["errors"]} == {field}


@pytest.mark.parametrize(
    "query",
    [
        "{ products { ",
        "{ products { edges { node { noSuchField } } } }",
        "query { product(id: 42) { id } }",
    ],
)
def test_a_document_that_does_not_parse_or_validate_is_bad_input(editor, query):
    response = gql(editor, query)

    error = the_error(response, "BAD_USER_INPUT", "malformed-request")
    assert error["message"]
    assert response.json()["data"] is None


# --- CONFLICT and PRECONDITION_FAILED ----------------------------------------------------------


def test_a_duplicate_sku_is_a_conflict(tenant, editor):
    existing = make_product(tenant, sku="DUP-1")
    other = make_product(tenant, sku="DUP-2")

    create = gql(editor, CREATE, {"in": {"sku": "DUP-1", "name": "Again", "price": "1"}})
    rename = gql(editor, UPDATE, {"id": str(other.id), "in": {"sku": existing.sku}})

    for response in (create, rename):
        error = the_error(response, "CONFLICT", "conflict")
        assert "DUP-1" in error["message"]
    assert product_count(tenant) == 2
    assert stored_product(other.id).sku == "DUP-2"


def test_a_stale_expected_version_is_a_failed_precondition(tenant, editor):
    # Given a product changed since the client read it
    product = make_product(tenant, name="Before")
    read_version = product.version
    changed = data_of(
        gql(editor, UPDATE, {"id": str(product.id), "in": {"name": "Now"}, "v": read_version})
    )["productUpdate"]
    assert changed["version"] == read_version + 1

    # When the client changes or deletes it with the version it read
    update = gql(editor, UPDATE, {"id": str(product.id), "in": {"name": "Lost"}, "v": read_version})
    delete = gql(editor, DELETE, {"id": str(product.id), "v": read_version})

    # Then both fail and nothing changed
    for response in (update, delete):
        the_error(response, "PRECONDITION_FAILED", "precondition-failed")
    stored = stored_product(product.id)
    assert stored.name == "Now"
    assert stored.version == read_version + 1
    # With the current version, it goes
    deleted = gql(editor, DELETE, {"id": str(product.id), "v": read_version + 1})
    assert data_of(deleted)["productDelete"]["id"] == str(product.id)
    assert stored_product(product.id) is None


# --- INTERNAL_SERVER_ERROR ---------------------------------------------------------------------


def test_an_unexpected_error_says_nothing_of_itself(tenant, editor, monkeypatch, caplog):
    # No input reaches a bug any more (the last one, text PostgreSQL refuses, is a field error
    # above): a selector is made to fail, as a bug would.
    def broken(**kwargs):
        raise RuntimeError("secret: the database password is hunter2")

    monkeypatch.setattr(selectors, "product_get", broken)
    product = make_product(tenant)
    make_category(tenant)

    response = gql(
        editor,
        "query($id: UUID!) { product(id: $id) { sku } categories { totalCount } }",
        {"id": str(product.id)},
    )

    error = the_error(response, "INTERNAL_SERVER_ERROR", "internal-error")
    assert error["path"] == ["product"]
    assert "secret" not in response.content.decode()
    assert "hunter2" not in response.content.decode()
    assert "RuntimeError" not in response.content.decode()
    # The rest of the query is still answered; the bug is logged, with the request's id
    assert response.json()["data"]["categories"] == {"totalCount": 1}
    assert any("hunter2" in str(record.exc_info) for record in caplog.records if record.exc_info)


# --- HTTP --------------------------------------------------------------------------------------


def test_a_query_can_be_sent_with_get(tenant, editor):
    make_product(tenant, sku="GET-1")

    query = "query($s: String) { products(filter: {search: $s}) { edges { node { sku } } } }"

    response = editor.get(GRAPHQL_URL, {"query": query, "variables": json.dumps({"s": "GET"})})

    assert data_of(response)["products"]["edges"] == [{"node": {"sku": "GET-1"}}]
    assert response["RateLimit-Remaining"]


def test_a_mutation_sent_with_get_is_refused_and_writes_nothing(tenant, editor):
    product = make_product(tenant)

    response = editor.get(
        GRAPHQL_URL, {"query": f'mutation {{ productDelete(id: "{product.id}") {{ id }} }}'}
    )

    body = assert_problem(response, 400, "malformed-request")
    assert "GET" in body["detail"]
    assert body["request_id"] == response["X-Request-ID"]
    assert stored_product(product.id) is not None


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_not_allowed(editor, method):
    response = getattr(editor, method)(
        GRAPHQL_URL, {"query": "{ products { totalCount } }"}, format="json"
    )

    assert_problem(response, 405, "method-not-allowed")
    assert response["Allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("not json", "application/json"),
        ('{"query": ', "application/json"),
        ("query=%7B%20products%20%7D", "text/plain"),
        ('"just a string"', "application/json"),
        ('{"variables": {}}', "application/json"),
        ('{"query": 42}', "application/json"),
        ('{"query": "{ products { totalCount } }", "variables": "x"}', "application/json"),
    ],
)
def test_what_is_no_graphql_request_is_a_400_problem(editor, body, content_type):
    response = editor.generic("POST", GRAPHQL_URL, body, content_type=content_type)

    problem = assert_problem(response, 400, "malformed-request")
    assert problem["detail"]
    assert problem["request_id"] == response["X-Request-ID"]


def test_a_batch_is_refused_cleanly_and_runs_nothing(tenant, editor):
    batch = [
        {"query": 'mutation { productCreate(input: {sku: "B-1", name: "B", price: "1"}) { id } }'},
        {"query": "{ products { totalCount } }"},
    ]

    response = editor.post(GRAPHQL_URL, batch, format="json")

    problem = assert_problem(response, 400, "malformed-request")
    assert "batch" in problem["detail"].lower()
    assert product_count(tenant) == 0


def test_no_credential_is_a_401_problem_before_graphql_runs(tenant, api_client):
    response = api_client.post(
        GRAPHQL_URL,
        {"query": 'mutation { productCreate(input: {sku: "N-1", name: "N", price: "1"}) { id } }'},
        format="json",
    )

    body = assert_problem(response, 401, "not-authenticated")
    assert "errors" not in body
    assert product_count(tenant) == 0
