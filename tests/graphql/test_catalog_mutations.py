"""GraphQL's catalog writes against REST's: each change is seen by REST at once (its cached reads
included), audited and published as REST's own, and refused where REST refuses it."""

from contextlib import contextmanager
from typing import Any

import pytest

from catalog.models import Category
from kernel.tenancy.models import Plan
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    category_url,
    editor_client,
    make_category,
    make_product,
    product_count,
    product_url,
    published_events,
    stored_product,
    viewer_client,
)
from tests.factories import make_tenant
from tests.graphql.conftest import data_of, error_codes, gql
from tests.helpers import client_for, outcome, owner_of, tasks_run_inline

# The enterprise plan: its rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="enterprise")]

PRODUCT_FIELDS = """
  id sku name description price currency stock isActive tags attributes version createdAt
  updatedAt category { id }
"""
PRODUCT_CREATE = f"""
mutation Create($input: ProductCreateInput!) {{
  productCreate(input: $input) {{ {PRODUCT_FIELDS} }}
}}
"""
PRODUCT_UPDATE = f"""
mutation Update($id: UUID!, $input: ProductUpdateInput!, $expectedVersion: Int) {{
  productUpdate(id: $id, input: $input, expectedVersion: $expectedVersion) {{ {PRODUCT_FIELDS} }}
}}
"""
PRODUCT_DELETE = """
mutation Delete($id: UUID!, $expectedVersion: Int) {
  productDelete(id: $id, expectedVersion: $expectedVersion) { id }
}
"""
CATEGORY_FIELDS = "id name slug version createdAt updatedAt parent { id }"
CATEGORY_CREATE = f"""
mutation Create($input: CategoryCreateInput!) {{
  categoryCreate(input: $input) {{ {CATEGORY_FIELDS} }}
}}
"""
CATEGORY_UPDATE = f"""
mutation Update($id: UUID!, $input: CategoryUpdateInput!, $expectedVersion: Int) {{
  categoryUpdate(id: $id, input: $input, expectedVersion: $expectedVersion) {{ {CATEGORY_FIELDS} }}
}}
"""
CATEGORY_DELETE = """
mutation Delete($id: UUID!, $expectedVersion: Int) {
  categoryDelete(id: $id, expectedVersion: $expectedVersion) { id }
}
"""
# What differs between two products written alike: who they are and when.
OWN_FIELDS = {"id", "sku", "created_at", "updated_at"}


@pytest.fixture
def owner(tenant):
    """The tenant's owner, who reads the audit log."""
    return client_for(owner_of(tenant), tenant)


@pytest.fixture
def captured(django_capture_on_commit_callbacks):
    """Run a write and collect the catalog events it publishes (after its commit)."""

    @contextmanager
    def capture():
        with (
            tasks_run_inline(),
            published_events() as received,
            django_capture_on_commit_callbacks(execute=True),
        ):
            yield received

    return capture


def audit_events(client, action: str, target_id: str) -> list[dict]:
    response = client.get("/api/v1/audit-events/", {"action": action, "page_size": 100})
    assert response.status_code == 200, response.content
    return [event for event in response.json()["results"] if event["target_id"] == target_id]


def the_audit_event(client, action: str, target_id: str, response) -> dict:
    """The one audit event of `action` on `target_id`, made by the request of `response`."""
    (event,) = audit_events(client, action, target_id)
    assert event["request_id"] == response["X-Request-ID"]
    return event


def without(mapping: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name not in names}


def listed(client, url: str = PRODUCTS) -> dict[str, dict]:
    """A REST list (its cached read, when there is one), by id."""
    response = client.get(url, {"page_size": 100})
    assert response.status_code == 200, response.content
    return {item["id"]: item for item in response.json()["results"]}


def graphql_product_input(body: dict[str, Any]) -> dict[str, Any]:
    """A REST product body as GraphQL's input spells it."""
    names = {"is_active": "isActive"}
    return {names.get(name, name): value for name, value in body.items()}


def bad_input_fields(response) -> set[str]:
    assert error_codes(response) == ["BAD_USER_INPUT"], response.json()
    (error,) = response.json()["errors"]
    return {entry["field"] for entry in error["extensions"]["errors"]}


def problem_of(response, code: str) -> dict:
    """The extensions of the one error of `response`, which has `code`."""
    assert error_codes(response) == [code], response.json()
    (error,) = response.json()["errors"]
    return error["extensions"]


def stored_category(category_id) -> Category | None:
    with outcome():
        return Category.objects.filter(pk=category_id).first()


# --- products: each write as REST's ------------------------------------------------------------


def test_product_create_is_seen_by_rest_audited_and_published_as_rests(
    tenant, editor, owner, captured
):
    category = make_category(tenant)
    body = {
        "name": "Café T-shirt ☕ 東京 🚀",
        "description": "Soft cotton.\n",
        "price": "19.99",
        "currency": "eur",
        "stock": 3,
        "is_active": True,
        "category": str(category.id),
        "tags": ["Summer", "cotton"],
        "attributes": {"color": "blue", "size": {"eu": 42}},
    }
    before = listed(editor)  # REST's list, now cached

    with captured() as rest_events:
        rest = editor.post(PRODUCTS, {**body, "sku": "REST-1"}, format="json")
    with captured() as graphql_events:
        response = gql(
            editor, PRODUCT_CREATE, {"input": graphql_product_input(body) | {"sku": "GQL-1"}}
        )

    assert rest.status_code == 201, rest.content
    created = data_of(response)["productCreate"]
    # REST sees it at once, in its (cached) list and its detail, as REST's own creation
    after = listed(editor)
    assert created["id"] not in before
    assert after[created["id"]]["sku"] == "GQL-1"
    detail = editor.get(product_url(created["id"])).json()
    assert without(detail, *OWN_FIELDS, "related") == without(rest.json(), *OWN_FIELDS, "related")
    assert detail["name"] == "Café T-shirt ☕ 東京 🚀"
    assert detail["currency"] == "EUR"
    assert created["currency"] == "EUR"
    assert created["category"] == {"id": str(category.id)}
    assert created["version"] == detail["version"] == 1
    # Audited alike, as the editor, by the GraphQL request
    graphql_audit = the_audit_event(owner, "catalog.product.created", created["id"], response)
    rest_audit = the_audit_event(owner, "catalog.product.created", rest.json()["id"], rest)
    assert graphql_audit["changes"]["sku"] == [None, "GQL-1"]
    assert without(graphql_audit["changes"], "sku") == without(rest_audit["changes"], "sku")
    assert graphql_audit["actor_id"] == rest_audit["actor_id"] is not None
    # Published alike, after commit
    assert [event.topic for event in graphql_events] == ["catalog.product.created"]
    assert [event.topic for event in rest_events] == ["catalog.product.created"]
    (graphql_event,), (rest_event,) = graphql_events, rest_events
    assert without(graphql_event.data, "id", "sku") == without(rest_event.data, "id", "sku")
    assert str(graphql_event.data["id"]) == created["id"]
    assert graphql_event.request_id == response["X-Request-ID"]
    assert graphql_event.actor == rest_event.actor
    assert graphql_event.tenant_id == str(tenant.id)


def test_product_update_is_partial_seen_by_rest_audited_and_published_as_rests(
    tenant, editor, owner, captured
):
    category = make_category(tenant)
    alike = {
        "name": "Mug ☕",
        "description": "Stoneware.",
        "price": "10.00",
        "stock": 8,
        "category": category,
        "tags": ["kitchen"],
        "attributes": {"volume_ml": 350},
    }
    by_rest = make_product(tenant, sku="MUG-REST", **alike)
    by_graphql = make_product(tenant, sku="MUG-GQL", **alike)
    change = {"price": "12.50", "tags": ["kitchen", "gift"], "stock": 20}
    listed(editor)
    untouched = editor.get(product_url(by_graphql.id)).json()  # the detail, now cached

    with captured() as rest_events:
        rest = editor.patch(product_url(by_rest.id), change, format="json")
    with captured() as graphql_events:
        response = gql(editor, PRODUCT_UPDATE, {"id": str(by_graphql.id), "input": change})

    assert rest.status_code == 200, rest.content
    updated = data_of(response)["productUpdate"]
    detail = editor.get(product_url(by_graphql.id)).json()
    # Only the fields given changed; REST's cached detail and list show it
    assert detail["price"] == "12.50"
    assert detail["tags"] == ["kitchen", "gift"]
    assert detail["stock"] == 20
    assert detail["version"] == updated["version"] == 2
    for name in ("name", "description", "currency", "category", "attributes", "is_active"):
        assert detail[name] == untouched[name], name
    assert listed(editor)[str(by_graphql.id)]["price"] == "12.50"
    assert without(detail, *OWN_FIELDS, "related") == without(rest.json(), *OWN_FIELDS, "related")
    # Audited alike: the diff of what changed
    graphql_audit = the_audit_event(owner, "catalog.product.updated", str(by_graphql.id), response)
    rest_audit = the_audit_event(owner, "catalog.product.updated", str(by_rest.id), rest)
    assert graphql_audit["changes"] == rest_audit["changes"]
    assert graphql_audit["changes"]["price"] == ["10.00", "12.50"]
    assert "name" not in graphql_audit["changes"]
    # Published alike
    assert [event.topic for event in graphql_events] == [event.topic for event in rest_events]
    assert [event.topic for event in graphql_events] == ["catalog.product.updated"]
    assert graphql_events[0].data["changed"] == ["price", "stock", "tags"]
    assert without(graphql_events[0].data, "id", "sku") == without(rest_events[0].data, "id", "sku")


def test_an_update_that_goes_below_the_stock_threshold_publishes_low_stock_as_rest(
    tenant, editor, captured
):
    tenant.settings = {"low_stock_threshold": 3}
    tenant.save(update_fields=["settings"])
    by_rest = make_product(tenant, sku="LOW-REST", stock=10)
    by_graphql = make_product(tenant, sku="LOW-GQL", stock=10)
    client = editor_client(tenant)

    with captured() as rest_events:
        client.patch(product_url(by_rest.id), {"stock": 2}, format="json")
    with captured() as graphql_events:
        data_of(gql(client, PRODUCT_UPDATE, {"id": str(by_graphql.id), "input": {"stock": 2}}))

    topics = ["catalog.product.updated", "catalog.product.low_stock"]
    assert [event.topic for event in rest_events] == topics
    assert [event.topic for event in graphql_events] == topics
    assert graphql_events[1].data["threshold"] == 3


def test_product_delete_is_seen_by_rest_audited_and_published_as_rests(
    tenant, editor, owner, captured
):
    by_rest = make_product(tenant, sku="DEL-REST", name="Gone")
    by_graphql = make_product(tenant, sku="DEL-GQL", name="Gone")
    assert str(by_graphql.id) in listed(editor)
    assert editor.get(product_url(by_graphql.id)).status_code == 200  # cached

    with captured() as rest_events:
        rest = editor.delete(product_url(by_rest.id))
    with captured() as graphql_events:
        response = gql(editor, PRODUCT_DELETE, {"id": str(by_graphql.id)})

    assert rest.status_code == 204
    assert data_of(response)["productDelete"] == {"id": str(by_graphql.id)}
    assert str(by_graphql.id) not in listed(editor)
    assert editor.get(product_url(by_graphql.id)).status_code == 404
    assert stored_product(by_graphql.id) is None
    graphql_audit = the_audit_event(owner, "catalog.product.deleted", str(by_graphql.id), response)
    rest_audit = the_audit_event(owner, "catalog.product.deleted", str(by_rest.id), rest)
    assert graphql_audit["changes"]["sku"] == ["DEL-GQL", None]
    assert without(graphql_audit["changes"], "sku") == without(rest_audit["changes"], "sku")
    assert [event.topic for event in graphql_events] == ["catalog.product.deleted"]
    assert [event.topic for event in rest_events] == ["catalog.product.deleted"]
    assert graphql_events[0].data["name"] == rest_events[0].data["name"] == "Gone"
    # Deleted twice: not found, as REST says
    again = gql(editor, PRODUCT_DELETE, {"id": str(by_graphql.id)})
    assert problem_of(again, "NOT_FOUND")["problem"].endswith("/not-found")


# --- categories: each write as REST's ----------------------------------------------------------


def test_category_writes_are_seen_by_rest_and_audited_as_rests(tenant, editor, owner, captured):
    parent = make_category(tenant, name="Shoes")
    before = listed(editor, CATEGORIES)

    # Create
    with captured() as rest_events:
        rest = editor.post(CATEGORIES, {"name": "Été ☀ sandals", "parent": str(parent.id)})
    with captured() as graphql_events:
        response = gql(
            editor, CATEGORY_CREATE, {"input": {"name": "Hiver ❄ boots", "parent": str(parent.id)}}
        )
    assert rest.status_code == 201, rest.content
    rest_id = rest.json()["id"]
    created = data_of(response)["categoryCreate"]
    assert created["id"] not in before
    after = listed(editor, CATEGORIES)
    assert after[created["id"]] == editor.get(category_url(created["id"])).json()
    assert after[created["id"]]["name"] == "Hiver ❄ boots"
    assert after[created["id"]]["slug"] == "hiver-boots"
    assert rest.json()["slug"] == "ete-sandals"
    assert after[created["id"]]["parent"] == created["parent"]["id"] == str(parent.id)
    graphql_audit = the_audit_event(owner, "catalog.category.created", created["id"], response)
    rest_audit = the_audit_event(owner, "catalog.category.created", rest_id, rest)
    assert graphql_audit["changes"]["name"] == [None, "Hiver ❄ boots"]
    assert set(graphql_audit["changes"]) == set(rest_audit["changes"])
    # Neither surface publishes an event for categories
    assert graphql_events == rest_events == []

    # Update: partial, the slug kept
    with captured() as rest_events:
        rest = editor.patch(category_url(rest_id), {"name": "Sandals"}, format="json")
    with captured() as graphql_events:
        response = gql(editor, CATEGORY_UPDATE, {"id": created["id"], "input": {"name": "Boots"}})
    assert rest.status_code == 200, rest.content
    updated = data_of(response)["categoryUpdate"]
    assert updated["version"] == 2
    detail = editor.get(category_url(created["id"])).json()
    assert (detail["name"], detail["slug"], detail["parent"]) == (
        "Boots",
        "hiver-boots",
        str(parent.id),
    )
    assert listed(editor, CATEGORIES)[created["id"]]["name"] == "Boots"
    graphql_audit = the_audit_event(owner, "catalog.category.updated", created["id"], response)
    rest_audit = the_audit_event(owner, "catalog.category.updated", rest_id, rest)
    assert graphql_audit["changes"] == {"name": ["Hiver ❄ boots", "Boots"]}
    assert set(rest_audit["changes"]) == {"name"}
    assert graphql_events == rest_events == []

    # Delete
    with captured() as rest_events:
        rest = editor.delete(category_url(rest_id))
    with captured() as graphql_events:
        response = gql(editor, CATEGORY_DELETE, {"id": created["id"]})
    assert rest.status_code == 204
    assert data_of(response)["categoryDelete"] == {"id": created["id"]}
    assert created["id"] not in listed(editor, CATEGORIES)
    assert editor.get(category_url(created["id"])).status_code == 404
    graphql_audit = the_audit_event(owner, "catalog.category.deleted", created["id"], response)
    rest_audit = the_audit_event(owner, "catalog.category.deleted", rest_id, rest)
    assert graphql_audit["changes"]["name"] == ["Boots", None]
    assert set(graphql_audit["changes"]) == set(rest_audit["changes"])
    assert graphql_events == rest_events == []


# --- refusals ----------------------------------------------------------------------------------


def test_a_stale_expected_version_changes_nothing(tenant, editor, owner, captured):
    product = make_product(tenant, sku="VER-1", price="10.00")
    category = make_category(tenant, name="Versioned")
    current = data_of(
        gql(
            editor,
            PRODUCT_UPDATE,
            {"id": str(product.id), "input": {"price": "11.00"}, "expectedVersion": 1},
        )
    )["productUpdate"]
    assert current["version"] == 2

    with captured() as received:
        refused = [
            gql(
                editor,
                PRODUCT_UPDATE,
                {"id": str(product.id), "input": {"price": "99.00"}, "expectedVersion": 1},
            ),
            gql(editor, PRODUCT_DELETE, {"id": str(product.id), "expectedVersion": 1}),
            gql(
                editor,
                CATEGORY_UPDATE,
                {"id": str(category.id), "input": {"name": "X"}, "expectedVersion": 7},
            ),
            gql(editor, CATEGORY_DELETE, {"id": str(category.id), "expectedVersion": 0}),
        ]

    for response in refused:
        extensions = problem_of(response, "PRECONDITION_FAILED")
        assert extensions["problem"].endswith("/precondition-failed")
        assert response.json()["data"] is not None  # the field is null, the answer a 200
    assert received == []
    stored = stored_product(product.id)
    assert (str(stored.price), stored.version) == ("11.00", 2)
    assert editor.get(product_url(product.id)).json()["price"] == "11.00"
    assert stored_category(category.id).name == "Versioned"
    assert len(audit_events(owner, "catalog.product.updated", str(product.id))) == 1
    assert audit_events(owner, "catalog.product.deleted", str(product.id)) == []
    # The current version passes
    deleted = gql(editor, PRODUCT_DELETE, {"id": str(product.id), "expectedVersion": 2})
    assert data_of(deleted)["productDelete"] == {"id": str(product.id)}


def test_a_category_in_use_cannot_be_deleted(tenant, editor):
    with_products = make_category(tenant, name="Has products")
    make_product(tenant, category=with_products)
    with_children = make_category(tenant, name="Has children")
    make_category(tenant, parent=with_children)

    for category in (with_products, with_children):
        response = gql(editor, CATEGORY_DELETE, {"id": str(category.id)})
        extensions = problem_of(response, "CONFLICT")
        assert extensions["problem"].endswith("/conflict")
        assert stored_category(category.id) is not None
        rest = editor.delete(category_url(category.id))
        assert rest.status_code == 409


def test_the_plans_product_quota_applies(tenant, editor):
    tenant.plan = Plan.objects.create(code="tiny", name="Tiny", max_products=2)
    tenant.save(update_fields=["plan"])
    make_product(tenant)

    allowed = gql(editor, PRODUCT_CREATE, {"input": {"sku": "Q-1", "name": "One", "price": "1"}})
    refused = gql(editor, PRODUCT_CREATE, {"input": {"sku": "Q-2", "name": "Two", "price": "1"}})

    assert data_of(allowed)["productCreate"]["sku"] == "Q-1"
    extensions = problem_of(refused, "FORBIDDEN")
    assert extensions["problem"].endswith("/quota-exceeded")
    assert (extensions["resource"], extensions["limit"]) == ("products", 2)
    assert product_count(tenant) == 2
    # REST is refused alike
    rest = editor.post(PRODUCTS, {"sku": "Q-3", "name": "Three", "price": "1"}, format="json")
    assert rest.status_code == 403
    assert rest.json()["type"] == extensions["problem"]


def test_another_tenants_ids_do_not_exist(tenant, editor):
    other = make_tenant()
    foreign_category = make_category(other, name="Theirs")
    foreign_product = make_product(other, sku="THEIRS-1")
    mine = make_product(tenant, sku="MINE-1")

    created = gql(
        editor,
        PRODUCT_CREATE,
        {"input": {"sku": "X-1", "name": "X", "price": "1", "category": str(foreign_category.id)}},
    )
    moved = gql(
        editor,
        PRODUCT_UPDATE,
        {"id": str(mine.id), "input": {"category": str(foreign_category.id)}},
    )
    nested = gql(
        editor, CATEGORY_CREATE, {"input": {"name": "Child", "parent": str(foreign_category.id)}}
    )

    assert bad_input_fields(created) == {"category"}
    assert bad_input_fields(moved) == {"category"}
    assert bad_input_fields(nested) == {"parent"}
    assert product_count(tenant) == 1
    assert stored_product(mine.id).category_id is None
    # Their product and category are not found, for reading and writing alike
    for response in (
        gql(
            editor, "query($id: UUID!) { product(id: $id) { id } }", {"id": str(foreign_product.id)}
        ),
        gql(editor, PRODUCT_UPDATE, {"id": str(foreign_product.id), "input": {"name": "Mine"}}),
        gql(editor, PRODUCT_DELETE, {"id": str(foreign_product.id)}),
        gql(editor, CATEGORY_UPDATE, {"id": str(foreign_category.id), "input": {"name": "Mine"}}),
        gql(editor, CATEGORY_DELETE, {"id": str(foreign_category.id)}),
    ):
        assert problem_of(response, "NOT_FOUND")["problem"].endswith("/not-found")
    assert stored_product(foreign_product.id).name != "Mine"
    assert stored_category(foreign_category.id).name == "Theirs"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Nul\x00byte"}, "name"),
        ({"description": "Nul\x00byte"}, "description"),
        ({"tags": ["ok", "nul\x00"]}, "tags.1"),
        ({"price": "-1"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"price": "1.005"}, "price"),
        ({"price": "1" + "0" * 20}, "price"),
        ({"sku": "has spaces"}, "sku"),
        ({"name": "x" * 256}, "name"),
        ({"name": "   "}, "name"),
        ({"currency": "EURO"}, "currency"),
        ({"stock": -1}, "stock"),
        ({"attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "attributes"),
        ({"attributes": {"k" * 101: 1}}, "attributes"),
        ({"attributes": [1, 2]}, "attributes"),
    ],
)
def test_bad_product_input_is_refused_as_rest_refuses_it(tenant, editor, body, field):
    base = {"sku": "BAD-1", "name": "Bad", "price": "1.00"}
    rest = editor.post(PRODUCTS, {**base, **body}, format="json")
    response = gql(editor, PRODUCT_CREATE, {"input": {**base, **body}})

    assert rest.status_code == 400, rest.content
    rest_fields = {entry["field"] for entry in rest.json()["errors"]}
    assert bad_input_fields(response) == rest_fields
    assert field in rest_fields or any(name.startswith(field) for name in rest_fields)
    assert product_count(tenant) == 0


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"category": "not-a-uuid"}, ".category"),
        ({"price": "abc"}, ".price"),
        ({"stock": 2**40}, ".stock"),
        ({"isActive": "yes"}, ".isActive"),
    ],
)
def test_values_of_the_wrong_type_are_refused_before_anything_runs(tenant, editor, body, path):
    base = {"sku": "TYPE-1", "name": "Typed", "price": "1.00"}

    response = gql(editor, PRODUCT_CREATE, {"input": {**base, **body}})

    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert path in error["message"]
    assert response.json()["data"] is None
    assert product_count(tenant) == 0


@pytest.mark.parametrize("name", ["Nul\x00byte", "", "x" * 201])
def test_bad_category_names_are_refused_as_rest_refuses_them(tenant, editor, name):
    rest = editor.post(CATEGORIES, {"name": name}, format="json")
    response = gql(editor, CATEGORY_CREATE, {"input": {"name": name}})

    assert rest.status_code == 400, rest.content
    assert bad_input_fields(response) == {entry["field"] for entry in rest.json()["errors"]}
    assert "name" in bad_input_fields(response)
    with outcome():
        assert not Category.objects.filter(tenant=tenant).exists()


def test_unicode_names_are_kept_exactly(tenant, editor):
    name = "Ünïcödé ☕ 東京 🚀 עברית ‮"
    product = data_of(
        gql(
            editor,
            PRODUCT_CREATE,
            {"input": {"sku": "UNI-1", "name": name, "price": "3.00", "tags": ["東京"]}},
        )
    )["productCreate"]
    category = data_of(gql(editor, CATEGORY_CREATE, {"input": {"name": name, "slug": "unicode"}}))[
        "categoryCreate"
    ]

    assert product["name"] == category["name"] == name
    assert editor.get(product_url(product["id"])).json()["name"] == name
    assert editor.get(category_url(category["id"])).json()["name"] == name
    assert product["tags"] == ["東京"]


def test_a_viewer_cannot_write(tenant):
    viewer = viewer_client(tenant)

    response = gql(viewer, PRODUCT_CREATE, {"input": {"sku": "V-1", "name": "V", "price": "1"}})

    extensions = problem_of(response, "FORBIDDEN")
    assert extensions["problem"].endswith("/permission-denied")
    assert product_count(tenant) == 0
