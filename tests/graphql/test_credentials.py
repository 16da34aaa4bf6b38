"""The credentials REST takes work on /graphql/ alike: a person's access token, an API key and a
third-party app's OAuth token, each with its own rights; a suspended tenant or a bad credential
is refused as on REST, with a problem, before any GraphQL runs."""

import pytest
from rest_framework.test import APIClient

from kernel.permissions import Perm
from kernel.tenancy.models import Tenant
from kernel.tenants import tenant_set_status
from tests.catalog_helpers import editor_client, make_category, make_product, product_count
from tests.factories import make_member, make_tenant
from tests.graphql.conftest import GRAPHQL_URL, data_of, error_codes, gql
from tests.helpers import API, assert_problem, client_for, owner_of, sign_in
from tests.oauth.conftest import registration, wsgi_transport  # noqa: F401 (a fixture)
from tests.oauth.flow import in_process

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="enterprise")]

CATALOG_PAGE = """
{
  products(first: 10, orderBy: SKU) {
    totalCount
    edges { node { id sku price category { name } related { sku } } }
  }
}
"""
PRODUCT_CREATE = """
mutation Create($input: ProductCreateInput!) { productCreate(input: $input) { id sku } }
"""


def sending(authorization: str) -> APIClient:
    """A client sending `authorization` with every request."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def api_key(owner: APIClient, permissions: list[str]) -> str:
    """The Authorization header of a new API key of the owner's tenant, holding
    `permissions`."""
    response = owner.post(
        f"{API}/api-keys/", {"name": "graphql", "permissions": permissions}, format="json"
    )
    assert response.status_code == 201, response.content
    return f"Api-Key {response.json()['key']}"


def oauth_token(transport, owner: APIClient, person, scopes: list[str]) -> str:
    """The owner registers an app with `scopes`, `person` grants them all: the Authorization
    header of the app's access token."""
    _, app = registration(owner, scopes=scopes)
    tokens = in_process(app, transport).tokens(email=person.email, scope=" ".join(scopes))
    assert sorted(tokens["scope"].split()) == sorted(scopes)
    return f"Bearer {tokens['access_token']}"


def access_token(person, tenant) -> str:
    """The Authorization header of `person`'s access token in `tenant`, from the sign-in."""
    return f"Bearer {sign_in(APIClient(), person, tenant)['access']}"


def create(client: APIClient, sku: str):
    return gql(client, PRODUCT_CREATE, {"input": {"sku": sku, "name": sku, "price": "1.00"}})


@pytest.fixture
def owner(tenant) -> APIClient:
    return client_for(owner_of(tenant), tenant)


@pytest.fixture
def catalog(tenant):
    shoes = make_category(tenant, name="Shoes")
    for index in range(3):
        make_product(tenant, sku=f"CRED-{index}", category=shoes, tags=["sale"])


@pytest.fixture
def credentials(tenant, owner, wsgi_transport):  # noqa: F811 (the imported fixture)
    """One Authorization header per kind of credential, each allowed to read the catalog: an
    editor's access token, an API key, and an app's OAuth token granted by an editor."""
    editor = make_member(tenant, roles=["editor"]).user
    return {
        "access token": access_token(editor, tenant),
        "API key": api_key(owner, [Perm.CATALOG_READ]),
        "OAuth token": oauth_token(wsgi_transport, owner, editor, ["catalog.read"]),
    }


def test_the_same_query_answers_alike_with_each_credential(catalog, credentials):
    answers = {}
    for kind, authorization in credentials.items():
        response = gql(sending(authorization), CATALOG_PAGE)
        answers[kind] = data_of(response)
        # The same request bookkeeping as REST, whoever asks
        assert response["X-Request-ID"]
        assert "RateLimit-Limit" in response, kind

    expected = answers["access token"]
    assert [edge["node"]["sku"] for edge in expected["products"]["edges"]] == [
        "CRED-0",
        "CRED-1",
        "CRED-2",
    ]
    assert expected["products"]["totalCount"] == 3
    assert all(edge["node"]["related"] for edge in expected["products"]["edges"])
    assert answers["API key"] == expected
    assert answers["OAuth token"] == expected


def test_an_oauth_token_has_only_the_scopes_granted(tenant, owner, wsgi_transport):  # noqa: F811
    # Given an editor (who may write the catalog) granting an app catalog.read alone
    editor = make_member(tenant, roles=["editor"]).user
    reader = sending(oauth_token(wsgi_transport, owner, editor, ["catalog.read"]))
    writer = sending(oauth_token(wsgi_transport, owner, editor, ["catalog.read", "catalog.write"]))

    # Then the app reads, and cannot write
    data_of(gql(reader, "{ products { edges { node { id } } } }"))
    refused = create(reader, "OAUTH-1")
    assert error_codes(refused) == ["FORBIDDEN"]
    extensions = refused.json()["errors"][0]["extensions"]
    assert extensions["problem"].endswith("/permission-denied")
    assert product_count(tenant) == 0
    # While an app granted catalog.write by the same person writes, as the person itself can
    assert data_of(create(writer, "OAUTH-2"))["productCreate"]["sku"] == "OAUTH-2"
    assert data_of(create(client_for(editor, tenant), "OAUTH-3"))["productCreate"]["sku"] == (
        "OAUTH-3"
    )
    assert product_count(tenant) == 2


def test_an_api_key_has_only_its_permissions(tenant, owner):
    reader = sending(api_key(owner, [Perm.CATALOG_READ]))
    writer = sending(api_key(owner, [Perm.CATALOG_READ, Perm.CATALOG_WRITE]))
    nothing = sending(api_key(owner, [Perm.MEMBERS_READ]))

    data_of(gql(reader, "{ products { edges { node { id } } } }"))
    assert error_codes(create(reader, "KEY-1")) == ["FORBIDDEN"]
    assert error_codes(gql(nothing, "{ products { edges { node { id } } } }")) == ["FORBIDDEN"]
    assert data_of(create(writer, "KEY-2"))["productCreate"]["sku"] == "KEY-2"
    assert product_count(tenant) == 1


def test_a_suspended_tenant_is_refused_with_every_credential(
    tenant, catalog, credentials, django_capture_on_commit_callbacks
):
    clients = {kind: sending(authorization) for kind, authorization in credentials.items()}
    for client in clients.values():
        data_of(gql(client, CATALOG_PAGE))

    # As the admin's action does it: the service bumps the tenant's access epoch on commit
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant_ids=[tenant.id], status=Tenant.Status.SUSPENDED)

    for kind, client in clients.items():
        body = assert_problem(gql(client, CATALOG_PAGE), 403, "tenant-suspended")
        assert "errors" not in body, kind
        assert_problem(client.get(GRAPHQL_URL, {"query": "{ products { totalCount } }"}), 403)
    assert_problem(create(clients["access token"], "SUSPENDED-1"), 403, "tenant-suspended")
    assert product_count(tenant) == 3


def tampered(credential: str) -> str:
    """`credential` with one character changed, in its middle (where the signature or secret
    is, not padding)."""
    middle = len(credential) // 2
    swapped = "A" if credential[middle] != "A" else "B"
    return credential[:middle] + swapped + credential[middle + 1 :]


def test_a_tampered_credential_is_refused_before_any_graphql_runs(tenant, catalog, credentials):
    for kind, authorization in credentials.items():
        scheme, credential = authorization.split(" ", 1)
        for bad in (tampered(credential), credential[:-1], credential + "x"):
            response = gql(sending(f"{scheme} {bad}"), CATALOG_PAGE)
            body = assert_problem(response, 401, "not-authenticated")
            assert "errors" not in body, kind
            assert "data" not in body, kind
        # The genuine credential still works
        data_of(gql(sending(authorization), CATALOG_PAGE))


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Api-Key", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Token x"],
)
def test_no_credential_or_a_malformed_one_is_a_401_problem(catalog, authorization):
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = gql(client, CATALOG_PAGE)

    assert_problem(response, 401)
    assert "errors" not in response.json()


def test_each_tenants_credential_sees_only_its_own_catalog(tenant, catalog):
    other = make_tenant(plan_code="enterprise")
    make_product(other, sku="THEIRS-1")
    theirs = editor_client(other)

    mine = data_of(gql(editor_client(tenant), CATALOG_PAGE))["products"]
    their_page = data_of(gql(theirs, CATALOG_PAGE))["products"]

    assert [edge["node"]["sku"] for edge in their_page["edges"]] == ["THEIRS-1"]
    assert "THEIRS-1" not in {edge["node"]["sku"] for edge in mine["edges"]}
