"""`me`, `tenant`, `members`, `notifications` and `notificationMarkRead` over GraphQL: the same
fields, values, order and refusals as their REST endpoints, nothing of another member or tenant,
and a page's cost independent of its size."""

import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from strawberry.utils.str_converters import to_camel_case

from kernel.context import tenant_context
from kernel.events import publish
from tests.factories import make_member, make_role, make_tenant
from tests.graphql.conftest import data_of, error_codes, gql
from tests.helpers import API, ME, client_for, member_with_role, owner_of

pytestmark = pytest.mark.django_db

TENANT = f"{API}/tenant/"
MEMBERS = f"{API}/members/"
NOTIFICATIONS = f"{API}/notifications/"

ME_QUERY = """{ me {
  user { id email name dateJoined }
  tenant { id name slug status plan createdAt }
  roles permissions
  tenants { id name slug status plan createdAt }
} }"""
TENANT_QUERY = (
    "{ tenant { id name slug status plan settings requireMfa auditRetentionDays"
    " notificationRetentionDays planAuditRetentionDays planNotificationRetentionDays createdAt } }"
)
MEMBERS_QUERY = """query($first: Int!, $after: String) {
  members(first: $first, after: $after) {
    edges { cursor node { id user { id email name } roles { id name } createdAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""
NOTIFICATIONS_QUERY = """query($unread: Boolean, $topic: String, $first: Int! = 25) {
  notifications(unread: $unread, topic: $topic, first: $first) {
    edges { node { id topic data createdAt readAt } }
    pageInfo { hasNextPage }
    totalCount
  }
}"""
MARK_READ = """mutation($id: UUID!) {
  notificationMarkRead(id: $id) { id topic data createdAt readAt }
}"""


def camel(value: Any) -> Any:
    """A REST body as GraphQL names its fields."""
    if isinstance(value, dict):
        return {to_camel_case(name): camel(item) for name, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def rest(client: APIClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def nodes(connection_data: dict) -> list[dict]:
    return [edge["node"] for edge in connection_data["edges"]]


def announce(tenant, topic: str = "catalog.product.updated", **data) -> None:
    """A domain event in `tenant`: every member it concerns gets a notification."""
    with tenant_context(tenant.id):
        publish(topic=topic, data=data or {"sku": "A-1"}, actor=None)


@pytest.fixture
def fan_out(django_capture_on_commit_callbacks):
    """Publish as after a real commit: the fan-out runs inline."""

    def run(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            announce(*args, **kwargs)

    return run


@pytest.fixture
def shop():
    # The largest plan: pages of 30 with their roles cost much of a smaller one's rate limit.
    tenant = make_tenant(name="Shop", plan_code="enterprise")
    return tenant, owner_of(tenant)


def api_key_client(owner_client: APIClient, permissions: list[str]) -> APIClient:
    response = owner_client.post(
        f"{API}/api-keys/", {"name": "machine", "permissions": permissions}, format="json"
    )
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {response.json()['key']}")
    return client


def client_with_only(tenant, *permissions: str) -> APIClient:
    role = make_role(tenant, permissions=permissions)
    return client_for(make_member(tenant, roles=[role.name]).user, tenant)


def selects(queries: list[str]) -> list[str]:
    """The reads among `queries` (not the savepoints around the request)."""
    return [sql for sql in queries if sql.startswith("SELECT")]


def queries_of(client: APIClient, query: str, variables: dict | None = None) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        data_of(gql(client, query, variables))
    return [entry["sql"] for entry in captured.captured_queries]


# --- me ------------------------------------------------------------------------------------------


def test_me_is_what_rest_shows_field_by_field(shop):
    tenant, owner = shop
    elsewhere = make_tenant(name="Elsewhere")
    make_member(elsewhere, user=owner, roles=["viewer"])
    client = client_for(owner, tenant)

    me = data_of(gql(client, ME_QUERY))["me"]

    assert me == camel(rest(client, ME))
    assert me["user"]["id"] == str(owner.id)
    assert me["tenant"]["id"] == str(tenant.id)
    assert [other["slug"] for other in me["tenants"]] == [elsewhere.slug]
    assert "owner" in me["roles"]


def test_me_is_refused_to_an_api_key_as_on_rest(shop):
    tenant, owner = shop
    machine = api_key_client(client_for(owner, tenant), ["catalog.read"])

    assert machine.get(ME).status_code == 403
    response = gql(machine, "{ me { user { id } } }")
    assert error_codes(response) == ["FORBIDDEN"]
    assert response.json()["data"] == {"me": None}


# --- tenant --------------------------------------------------------------------------------------


def test_tenant_is_what_rest_shows_to_a_member_and_to_an_api_key(
    shop, django_capture_on_commit_callbacks
):
    tenant, owner = shop
    owner_client = client_for(owner, tenant)
    with django_capture_on_commit_callbacks(execute=True):  # the change reaches every credential
        changed = owner_client.patch(
            TENANT, {"settings": {"locale": "fr", "ünïcode": ["✓", 1]}}, format="json"
        )
    assert changed.status_code == 200, changed.content
    viewer = client_for(member_with_role(tenant, "viewer"), tenant)
    machine = api_key_client(owner_client, ["catalog.read"])

    for client in (owner_client, viewer, machine):
        shown = data_of(gql(client, TENANT_QUERY))["tenant"]
        assert shown == camel(rest(client, TENANT))
        assert shown["settings"] == {"locale": "fr", "ünïcode": ["✓", 1]}


def test_tenant_is_always_the_callers_own(shop):
    tenant, owner = shop
    other = make_tenant(name="Other")
    mine = data_of(gql(client_for(owner, tenant), TENANT_QUERY))["tenant"]
    theirs = data_of(gql(client_for(owner_of(other), other), TENANT_QUERY))["tenant"]
    assert (mine["id"], theirs["id"]) == (str(tenant.id), str(other.id))


# --- members -------------------------------------------------------------------------------------


def test_members_are_rests_list_field_by_field_and_in_its_order(shop):
    tenant, owner = shop
    editor_role = make_role(tenant, name="helper", permissions=["catalog.read"])
    make_member(tenant, roles=["editor", editor_role.name], email="zoë@example.com")
    make_member(tenant, roles=["viewer"])
    client = client_for(owner, tenant)

    members = data_of(gql(client, MEMBERS_QUERY, {"first": 10}))["members"]

    assert nodes(members) == camel(rest(client, MEMBERS)["results"])
    assert len(nodes(members)) == 3
    assert members["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": members["edges"][-1]["cursor"],
    }
    two_roles = next(node for node in nodes(members) if node["user"]["email"] == "zoë@example.com")
    assert [role["name"] for role in two_roles["roles"]] == ["editor", "helper"]


def test_members_page_with_rests_cursors(shop):
    tenant, owner = shop
    for _ in range(2):
        make_member(tenant, roles=["viewer"])
    client = client_for(owner, tenant)

    first_page = data_of(gql(client, MEMBERS_QUERY, {"first": 1}))["members"]
    assert first_page["pageInfo"]["hasNextPage"] is True
    second_page = data_of(
        gql(client, MEMBERS_QUERY, {"first": 5, "after": first_page["pageInfo"]["endCursor"]})
    )["members"]
    every = camel(rest(client, MEMBERS)["results"])
    assert nodes(first_page) + nodes(second_page) == every

    # A REST `next` cursor is a valid `after`, and means the same position.
    rest_next = rest(client, f"{MEMBERS}?page_size=2")["next"]
    cursor = parse_qs(urlparse(rest_next).query)["cursor"][0]
    after_rest = data_of(gql(client, MEMBERS_QUERY, {"first": 5, "after": cursor}))["members"]
    assert nodes(after_rest) == every[2:]


def test_members_need_members_read(shop):
    tenant, _ = shop
    client = client_with_only(tenant, "notifications.read")

    assert client.get(MEMBERS).status_code == 403
    response = gql(client, MEMBERS_QUERY, {"first": 5})
    assert error_codes(response) == ["FORBIDDEN"]
    assert response.json()["errors"][0]["extensions"]["required_permission"] == "members.read"
    assert response.json()["data"] is None


def test_another_tenants_members_never_appear(shop):
    tenant, owner = shop
    other = make_tenant(name="Other")
    stranger = make_member(other, roles=["viewer"], email="stranger@example.com")

    members = nodes(
        data_of(gql(client_for(owner, tenant), MEMBERS_QUERY, {"first": 30}))["members"]
    )

    assert [member["user"]["id"] for member in members] == [str(owner.id)]
    assert str(stranger.id) not in {member["id"] for member in members}


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"first": 0}, "BAD_USER_INPUT"),
        ({"first": -3}, "BAD_USER_INPUT"),
        ({"first": 5, "after": "garbage"}, "BAD_USER_INPUT"),
        ({"first": 5, "after": "🙂" * 50}, "BAD_USER_INPUT"),
        ({"first": "ten"}, "BAD_USER_INPUT"),
        ({"first": 10**6}, "QUERY_TOO_COMPLEX"),
    ],
)
def test_bad_member_paging_is_refused(shop, variables, code):
    tenant, owner = shop
    response = gql(client_for(owner, tenant), MEMBERS_QUERY, variables)
    assert error_codes(response) == [code], response.json()


def test_a_page_of_members_costs_the_same_queries_for_1_and_30_rows(
    shop, django_assert_num_queries
):
    tenant, owner = shop
    client = client_for(owner, tenant)
    variables = {"first": 30}  # the most the cost limit allows a page of members with roles
    data_of(gql(client, MEMBERS_QUERY, variables))  # the credential's snapshot is cached now
    one_row = queries_of(client, MEMBERS_QUERY, variables)
    # The page with each member's user, then every member's roles in one query.
    reads = selects(one_row)
    assert len(reads) == 2
    assert '"tenants_role"' in reads[1]

    for _ in range(29):
        make_member(tenant, roles=["viewer", "editor"])
    with django_assert_num_queries(len(one_row)):
        members = data_of(gql(client, MEMBERS_QUERY, variables))["members"]
    assert len(members["edges"]) == 30
    assert all(node["roles"] for node in nodes(members))


# --- notifications -------------------------------------------------------------------------------


def test_notifications_are_rests_list_field_by_field_with_its_filters(shop, fan_out):
    tenant, owner = shop
    fan_out(tenant, sku="A")
    fan_out(tenant, sku="B")
    fan_out(tenant, topic="catalog.product.low_stock", sku="C")
    client = client_for(owner, tenant)
    oldest = rest(client, NOTIFICATIONS)["results"][-1]
    assert client.post(f"{NOTIFICATIONS}{oldest['id']}/read/").status_code == 200

    for variables, query_string in [
        ({}, ""),
        ({"unread": True}, "?unread=true"),
        ({"unread": False}, "?unread=false"),
        ({"topic": "catalog.product.low_stock"}, "?topic=catalog.product.low_stock"),
        (
            {"topic": "catalog.product.updated", "unread": True},
            "?topic=catalog.product.updated&unread=true",
        ),
        ({"topic": "no.such.topic"}, "?topic=no.such.topic"),
    ]:
        shown = data_of(gql(client, NOTIFICATIONS_QUERY, variables))["notifications"]
        expected = camel(rest(client, NOTIFICATIONS + query_string)["results"])
        assert nodes(shown) == expected, variables
        assert shown["totalCount"] == len(expected)

    every = nodes(data_of(gql(client, NOTIFICATIONS_QUERY))["notifications"])
    assert [node["data"]["sku"] for node in every] == ["C", "B", "A"]  # newest first
    assert [node["readAt"] is None for node in every] == [True, True, False]


@pytest.mark.parametrize("topic", ["", "x" * 101, "nul\x00byte"])
def test_a_bad_topic_filter_is_refused_as_on_rest(shop, topic):
    tenant, owner = shop
    client = client_for(owner, tenant)

    assert client.get(NOTIFICATIONS, {"topic": topic}).status_code == 400
    response = gql(client, NOTIFICATIONS_QUERY, {"topic": topic})
    assert error_codes(response) == ["BAD_USER_INPUT"]
    assert [entry["field"] for entry in response.json()["errors"][0]["extensions"]["errors"]] == [
        "topic"
    ]


def test_notifications_are_only_ones_own_in_ones_own_tenant(shop, fan_out):
    tenant, owner = shop
    colleague = member_with_role(tenant, "viewer")
    other = make_tenant(name="Other")
    fan_out(tenant, sku="OURS")
    fan_out(other, sku="THEIRS")
    owner_client, colleague_client = client_for(owner, tenant), client_for(colleague, tenant)

    mine = nodes(data_of(gql(owner_client, NOTIFICATIONS_QUERY))["notifications"])
    theirs = nodes(data_of(gql(colleague_client, NOTIFICATIONS_QUERY))["notifications"])

    assert [node["data"] for node in mine] == [{"sku": "OURS"}]
    assert [node["data"] for node in theirs] == [{"sku": "OURS"}]
    assert mine[0]["id"] != theirs[0]["id"]


def test_notifications_need_notifications_read_and_a_person(shop):
    tenant, owner = shop
    without = client_with_only(tenant, "members.read", "catalog.read")
    machine = api_key_client(client_for(owner, tenant), ["notifications.read"])

    for client in (without, machine):
        assert client.get(NOTIFICATIONS).status_code == 403
        assert error_codes(gql(client, NOTIFICATIONS_QUERY)) == ["FORBIDDEN"]
        assert error_codes(gql(client, MARK_READ, {"id": str(uuid.uuid4())})) == ["FORBIDDEN"]


def test_mark_read_marks_ones_own_once_and_shows_it_as_rest_does(shop, fan_out):
    tenant, owner = shop
    fan_out(tenant, sku="A")
    client = client_for(owner, tenant)
    (notification,) = rest(client, NOTIFICATIONS)["results"]

    marked = data_of(gql(client, MARK_READ, {"id": notification["id"]}))["notificationMarkRead"]

    assert marked["readAt"] is not None
    assert marked == camel(rest(client, NOTIFICATIONS)["results"][0])
    again = data_of(gql(client, MARK_READ, {"id": notification["id"]}))["notificationMarkRead"]
    assert again["readAt"] == marked["readAt"]  # read once, when it was first read


def test_mark_read_of_anothers_or_another_tenants_notification_is_not_found_and_changes_nothing(
    shop, fan_out
):
    tenant, owner = shop
    colleague = member_with_role(tenant, "viewer")
    other = make_tenant(name="Other")
    fan_out(tenant, sku="OURS")
    fan_out(other, sku="THEIRS")
    owner_client = client_for(owner, tenant)
    other_client = client_for(owner_of(other), other)
    (mine,) = rest(owner_client, NOTIFICATIONS)["results"]
    (abroad,) = rest(other_client, NOTIFICATIONS)["results"]
    colleague_client = client_for(colleague, tenant)

    for attempt in (mine["id"], abroad["id"], str(uuid.uuid4())):
        response = gql(colleague_client, MARK_READ, {"id": attempt})
        assert error_codes(response) == ["NOT_FOUND"]
        assert response.json()["data"] == {"notificationMarkRead": None}

    assert rest(owner_client, NOTIFICATIONS)["results"] == [mine]
    assert rest(other_client, NOTIFICATIONS)["results"] == [abroad]
    assert mine["read_at"] is None
    assert abroad["read_at"] is None


def test_mark_read_takes_a_uuid_in_a_variable_or_in_the_document(shop):
    tenant, owner = shop
    client = client_for(owner, tenant)
    for response in (
        gql(client, MARK_READ, {"id": "not-a-uuid"}),
        gql(client, 'mutation { notificationMarkRead(id: "not-a-uuid") { id } }'),
    ):
        assert error_codes(response) == ["BAD_USER_INPUT"], response.json()
        assert "not-a-uuid" in response.json()["errors"][0]["message"]


def test_a_topic_the_caller_may_no_longer_read_is_hidden_and_cannot_be_marked(
    shop, fan_out, django_capture_on_commit_callbacks
):
    tenant, owner = shop
    role = make_role(tenant, name="was-reader", permissions=["notifications.read", "catalog.read"])
    member = make_member(tenant, roles=[role.name]).user
    fan_out(tenant, sku="A")
    client = client_for(member, tenant)
    (stored,) = nodes(data_of(gql(client, NOTIFICATIONS_QUERY))["notifications"])
    with django_capture_on_commit_callbacks(execute=True):  # the access change takes effect
        changed = client_for(owner, tenant).patch(
            f"{API}/roles/{role.pk}/", {"permissions": ["notifications.read"]}, format="json"
        )
    assert changed.status_code == 200, changed.content

    assert rest(client, NOTIFICATIONS)["results"] == []
    shown = data_of(gql(client, NOTIFICATIONS_QUERY))["notifications"]
    assert (nodes(shown), shown["totalCount"]) == ([], 0)
    assert error_codes(gql(client, MARK_READ, {"id": stored["id"]})) == ["NOT_FOUND"]


def test_a_page_of_notifications_costs_the_same_queries_for_1_and_30_rows(
    shop, fan_out, django_assert_num_queries
):
    tenant, owner = shop
    client = client_for(owner, tenant)
    variables = {"first": 100}
    query = NOTIFICATIONS_QUERY.replace("totalCount", "")
    fan_out(tenant, sku="0")
    data_of(gql(client, query, variables))  # the credential's snapshot is cached now
    one_row = queries_of(client, query, variables)
    assert len(selects(one_row)) == 1

    for index in range(1, 30):
        fan_out(tenant, sku=str(index))
    with django_assert_num_queries(len(one_row)):
        shown = data_of(gql(client, query, variables))["notifications"]
    assert len(shown["edges"]) == 30
