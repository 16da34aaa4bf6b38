"""A tenant's third-party apps through /api/v1/oauth-apps/: registration with the secret shown
once, what a redirect URI and a scope may be, who may manage apps and with which scopes, the
plan's quota, the audit log, other tenants' apps, and what deleting or narrowing an app does to
the tokens it already holds."""

import uuid

import pytest
from rest_framework.test import APIClient

from kernel.permissions import Perm
from tests.factories import make_role, make_tenant
from tests.helpers import (
    API,
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    member_with_role,
    owner_of,
)
from tests.oauth.conftest import APPS, CATALOG_SCOPES, GRANTS
from tests.oauth.flow import REDIRECT_URI, App, in_process

pytestmark = pytest.mark.django_db

PRODUCTS = f"{API}/products/"
AUDIT = f"{API}/audit-events/"
APP_FIELDS = {
    "id",
    "name",
    "client_id",
    "redirect_uris",
    "scopes",
    "confidential",
    "created_at",
    "updated_at",
}
VALID = {"name": "Shop front", "redirect_uris": [REDIRECT_URI], "scopes": ["catalog.read"]}


def app_url(app_id) -> str:
    return f"{APPS}{app_id}/"


def create(client: APIClient, **changes) -> dict:
    response = client.post(APPS, {**VALID, **changes}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def listed(client: APIClient) -> list[dict]:
    response = client.get(APPS)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def as_flow_app(body: dict) -> App:
    return App(
        client_id=body["client_id"],
        client_secret=body.get("client_secret"),
        redirect_uri=body["redirect_uris"][0],
        scopes=body["scopes"],
    )


def bearer(access_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


def audit_events(client: APIClient, action: str) -> list[dict]:
    response = client.get(AUDIT, {"action": action})
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- registration and the secret ---------------------------------------------------------------


def test_registering_an_app_answers_its_client_id_and_secret_once(shop):
    _, _, owner_api = shop

    response = owner_api.post(
        APPS,
        {"name": "Shop front", "redirect_uris": [REDIRECT_URI], "scopes": CATALOG_SCOPES},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == APP_FIELDS | {"client_secret"}
    assert body["name"] == "Shop front"
    assert body["redirect_uris"] == [REDIRECT_URI]
    assert body["scopes"] == sorted(CATALOG_SCOPES)
    assert body["confidential"] is True
    assert body["client_id"]
    assert len(body["client_secret"]) >= 32
    assert response["Location"].endswith(app_url(body["id"]))
    assert response["Cache-Control"] == "no-store"
    # The secret is never shown again: neither listed nor retrieved
    retrieved = owner_api.get(app_url(body["id"]))
    assert retrieved.status_code == 200
    assert set(retrieved.json()) == APP_FIELDS
    assert body["client_secret"] not in retrieved.content.decode()
    (item,) = listed(owner_api)
    assert set(item) == APP_FIELDS
    assert body["client_secret"] not in owner_api.get(APPS).content.decode()


def test_the_secret_it_answered_is_the_one_the_token_endpoint_accepts(shop, wsgi_transport):
    _, owner, owner_api = shop
    body = create(owner_api, scopes=["catalog.read"])

    tokens = in_process(as_flow_app(body), wsgi_transport).tokens(
        email=owner.email, scope="catalog.read"
    )

    assert tokens["token_type"] == "Bearer"
    assert bearer(tokens["access_token"]).get(PRODUCTS).status_code == 200


def test_a_public_app_has_no_secret(shop):
    _, _, owner_api = shop

    body = create(owner_api, confidential=False)

    assert body["confidential"] is False
    assert "client_secret" not in body
    assert owner_api.get(app_url(body["id"])).json()["confidential"] is False


def test_an_app_is_listed_retrieved_changed_and_deleted(shop):
    _, _, owner_api = shop
    first = create(owner_api, name="First")
    second = create(owner_api, name="Second")

    # Listed, newest first
    assert [app["id"] for app in listed(owner_api)] == [second["id"], first["id"]]
    assert owner_api.get(app_url(first["id"])).json()["name"] == "First"

    # PATCH changes what it names
    patched = owner_api.patch(
        app_url(first["id"]), {"scopes": ["catalog.read", "catalog.write"]}, format="json"
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["scopes"] == ["catalog.read", "catalog.write"]
    assert patched.json()["name"] == "First"
    assert patched.json()["client_id"] == first["client_id"]

    # PUT replaces the whole, and needs the whole
    incomplete = owner_api.put(app_url(first["id"]), {"name": "Renamed"}, format="json")
    assert error_fields(incomplete) == {"redirect_uris", "scopes"}
    replaced = owner_api.put(
        app_url(first["id"]),
        {
            "name": "Renamed",
            "redirect_uris": ["https://renamed.example/cb", "https://renamed.example/cb2"],
            "scopes": ["openid"],
        },
        format="json",
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["redirect_uris"] == [
        "https://renamed.example/cb",
        "https://renamed.example/cb2",
    ]
    assert owner_api.get(app_url(first["id"])).json()["name"] == "Renamed"
    assert "client_secret" not in replaced.json()

    # DELETE removes it
    assert owner_api.delete(app_url(first["id"])).status_code == 204
    assert_problem(owner_api.get(app_url(first["id"])), 404, "not-found")
    assert [app["id"] for app in listed(owner_api)] == [second["id"]]


# --- what may be registered --------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "http://localhost:3000/cb",
        "https://app.example/callback?from=api",
    ],
)
def test_https_and_http_on_loopback_are_accepted_redirect_uris(shop, uri):
    _, _, owner_api = shop

    body = create(owner_api, redirect_uris=[uri])

    assert body["redirect_uris"] == [uri]


INVALID_INPUTS = [
    pytest.param({"redirect_uris": ["http://app.example/cb"]}, "redirect_uris.0", id="http"),
    pytest.param({"redirect_uris": ["http://10.0.0.1/cb"]}, "redirect_uris.0", id="http-private"),
    pytest.param(
        {"redirect_uris": ["http://localhost.evil.example/cb"]},
        "redirect_uris.0",
        id="http-loopback-lookalike",
    ),
    pytest.param(
        {"redirect_uris": ["https://app.example/cb", "https://app.example/c b"]},
        "redirect_uris.1",
        id="whitespace",
    ),
    pytest.param({"redirect_uris": ["https://app.example/cb#x"]}, "redirect_uris.0", id="fragment"),
    pytest.param(
        {"redirect_uris": ["https://user:pw@app.example/cb"]}, "redirect_uris.0", id="userinfo"
    ),
    pytest.param({"redirect_uris": ["https://*.app.example/cb"]}, "redirect_uris.0", id="wildcard"),
    pytest.param({"redirect_uris": ["not a uri"]}, "redirect_uris.0", id="not-a-uri"),
    pytest.param({"redirect_uris": ["/callback"]}, "redirect_uris.0", id="relative"),
    pytest.param({"redirect_uris": ["https://[::1/cb"]}, "redirect_uris.0", id="broken-host"),
    pytest.param({"redirect_uris": ["ftp://app.example/cb"]}, "redirect_uris.0", id="scheme"),
    pytest.param({"redirect_uris": "https://app.example/cb"}, "redirect_uris", id="not-a-list"),
    pytest.param({"redirect_uris": []}, "redirect_uris", id="no-redirect-uri"),
    pytest.param(
        {"redirect_uris": [f"https://app.example/cb{n}" for n in range(11)]},
        "redirect_uris",
        id="too-many-redirect-uris",
    ),
    pytest.param({"scopes": ["catalog.delete"]}, "scopes.0", id="unknown-scope"),
    pytest.param({"scopes": ["catalog.read", "*"]}, "scopes.1", id="wildcard-scope"),
    pytest.param({"scopes": []}, "scopes", id="no-scope"),
    pytest.param({"name": "x" * 101}, "name", id="name-too-long"),
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"confidential": "false"}, "confidential", id="confidential-string"),
    pytest.param({"confidential": 0}, "confidential", id="confidential-number"),
    pytest.param({"confidential": None}, "confidential", id="confidential-null"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID_INPUTS)
def test_an_invalid_registration_is_a_400_naming_the_field_and_creates_nothing(
    shop, changes, field
):
    _, _, owner_api = shop

    response = owner_api.post(APPS, {**VALID, **changes}, format="json")

    assert error_fields(response) == {field}
    assert listed(owner_api) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        param
        for param in INVALID_INPUTS
        if "confidential" not in param.values[0] and param.id != "not-a-list"
    ],
)
def test_an_invalid_change_is_a_400_naming_the_field_and_changes_nothing(shop, changes, field):
    _, _, owner_api = shop
    app = create(owner_api)

    response = owner_api.patch(app_url(app["id"]), changes, format="json")

    assert error_fields(response) == {field}
    assert owner_api.get(app_url(app["id"])).json() == {
        key: value for key, value in app.items() if key != "client_secret"
    }


def test_confidential_cannot_be_changed_after_registration(shop):
    # A public app would keep a secret it never uses, a confidential one would lose it: the
    # field is not part of a change
    _, _, owner_api = shop
    app = create(owner_api)

    response = owner_api.patch(app_url(app["id"]), {"confidential": False}, format="json")

    assert response.status_code == 200, response.content
    assert owner_api.get(app_url(app["id"])).json()["confidential"] is True


def test_a_unicode_name_is_kept_as_given(shop):
    _, _, owner_api = shop
    name = "Ünïcødé 商店 ✓ café"

    body = create(owner_api, name=name)

    assert body["name"] == name
    assert owner_api.get(app_url(body["id"])).json()["name"] == name


def test_duplicate_redirect_uris_are_kept_once_in_their_order(shop):
    _, _, owner_api = shop
    uris = ["https://b.example/cb", "https://a.example/cb", "https://b.example/cb"]

    body = create(owner_api, redirect_uris=uris)

    assert body["redirect_uris"] == ["https://b.example/cb", "https://a.example/cb"]


# --- who may -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_managing_apps_needs_oauth_apps_manage(shop, role):
    tenant, _, owner_api = shop
    app = create(owner_api)
    client = client_for(member_with_role(tenant, role), tenant)

    responses = [
        client.get(APPS),
        client.post(APPS, VALID, format="json"),
        client.get(app_url(app["id"])),
        client.patch(app_url(app["id"]), {"name": "Taken over"}, format="json"),
        client.put(app_url(app["id"]), {**VALID, "name": "Taken over"}, format="json"),
        client.delete(app_url(app["id"])),
    ]

    for response in responses:
        body = assert_problem(response, 403, "permission-denied")
        assert body["required_permission"] == "oauth_apps.manage"
    assert [(a["id"], a["name"]) for a in listed(owner_api)] == [(app["id"], "Shop front")]


def test_an_admin_may_manage_apps(shop):
    tenant, _, _ = shop
    admin = client_for(member_with_role(tenant, "admin"), tenant)

    body = create(admin, scopes=["catalog.read", "members.manage"])

    assert admin.patch(app_url(body["id"]), {"name": "Ops"}, format="json").status_code == 200
    assert admin.delete(app_url(body["id"])).status_code == 204


def test_an_app_cannot_be_given_scopes_its_registrar_does_not_hold(shop):
    # Given a member who manages apps and reads the catalog, but may not write to it
    tenant, _, owner_api = shop
    make_role(tenant, name="integrator", permissions=[Perm.OAUTH_APPS_MANAGE, Perm.CATALOG_READ])
    client = client_for(member_with_role(tenant, "integrator"), tenant)

    # When they register an app that may write to the catalog, Then it is refused
    refused = client.post(
        APPS, {**VALID, "scopes": ["catalog.read", "catalog.write"]}, format="json"
    )
    body = assert_problem(refused, 403, "permission-denied")
    assert "catalog.write" in body["detail"]
    assert listed(owner_api) == []

    # Nor can they widen an app to it later; the identity scopes are anyone's to give
    app = create(client, scopes=["catalog.read", "openid", "email"])
    widened = client.patch(app_url(app["id"]), {"scopes": ["catalog.write"]}, format="json")
    assert_problem(widened, 403, "permission-denied")
    assert owner_api.get(app_url(app["id"])).json()["scopes"] == ["catalog.read", "email", "openid"]


def test_the_plan_limits_how_many_apps_a_tenant_has(shop):
    # The free plan allows two apps
    _, _, owner_api = shop
    create(owner_api, name="One")
    create(owner_api, name="Two")

    refused = owner_api.post(APPS, {**VALID, "name": "Three"}, format="json")

    body = assert_problem(refused, 403, "quota-exceeded")
    assert body["resource"] == "oauth_apps"
    assert body["limit"] == 2
    assert [app["name"] for app in listed(owner_api)] == ["Two", "One"]
    # Deleting one frees its place
    assert owner_api.delete(app_url(listed(owner_api)[0]["id"])).status_code == 204
    assert create(owner_api, name="Three")["name"] == "Three"


# --- the audit log -----------------------------------------------------------------------------


def test_creating_changing_and_deleting_an_app_are_in_the_audit_log(shop):
    _, owner, owner_api = shop
    app = create(owner_api, scopes=["catalog.read"])
    owner_api.patch(
        app_url(app["id"]),
        {"name": "Shop back", "scopes": ["catalog.read", "catalog.write"]},
        format="json",
    )
    owner_api.delete(app_url(app["id"]))

    created, updated, deleted = (
        audit_events(owner_api, f"oauth.app.{verb}") for verb in ("created", "updated", "deleted")
    )

    assert len(created) == len(updated) == len(deleted) == 1
    for (event,) in (created, updated, deleted):
        assert event["target_type"] == "oauth_app"
        assert event["target_id"] == app["id"]
        assert event["actor_type"] == "user"
        assert event["actor_label"] == owner.email
    assert created[0]["changes"]["name"] == [None, "Shop front"]
    assert created[0]["changes"]["client_id"] == [None, app["client_id"]]
    assert updated[0]["changes"] == {
        "name": ["Shop front", "Shop back"],
        "scopes": [["catalog.read"], ["catalog.read", "catalog.write"]],
    }
    assert deleted[0]["changes"]["name"] == ["Shop back", None]
    # The secret is in none of them
    log = owner_api.get(AUDIT, {"action": "oauth.app.*"}).content.decode()
    assert app["client_secret"] not in log


def test_a_change_that_changes_nothing_records_nothing(shop):
    _, _, owner_api = shop
    app = create(owner_api)

    response = owner_api.patch(app_url(app["id"]), {"name": app["name"]}, format="json")

    assert response.status_code == 200
    assert audit_events(owner_api, "oauth.app.updated") == []


# --- other tenants -----------------------------------------------------------------------------


def test_another_tenants_app_is_not_found_and_stays_as_it_was(shop):
    # Given an app of Shop, and an admin of another tenant
    _, _, owner_api = shop
    app = create(owner_api)
    other = make_tenant(name="Globex")
    stranger = client_for(member_with_role(other, "admin"), other)

    # Then every method on it is a 404, and it is not in their list
    assert_not_found_for_every_method(
        stranger,
        app_url(app["id"]),
        {"patch": {"name": "Stolen"}, "put": {**VALID, "name": "Stolen"}, "delete": None},
    )
    assert listed(stranger) == []
    assert_problem(stranger.get(app_url(uuid.uuid4())), 404, "not-found")
    assert owner_api.get(app_url(app["id"])).json()["name"] == "Shop front"


# --- what happens to its tokens ----------------------------------------------------------------


def test_deleting_an_app_revokes_its_tokens_and_grants_in_every_tenant(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    # Given a member of Shop and a person of another tenant who both authorized Shop's app,
    # each in their own tenant, and the tokens working
    tenant, _, owner_api = shop
    app = create(owner_api, scopes=["catalog.read", "offline_access"])
    other = make_tenant(name="Globex")
    people = [(member_with_role(tenant, "editor"), tenant), (owner_of(other), other)]
    authorized = []
    for person, where in people:
        dance = in_process(as_flow_app(app), wsgi_transport)
        tokens = dance.tokens(
            email=person.email, scope="catalog.read offline_access", tenant=where.id
        )
        api, person_api = bearer(tokens["access_token"]), client_for(person, where)
        assert api.get(PRODUCTS).status_code == 200
        assert len(person_api.get(GRANTS).json()["results"]) == 1
        authorized.append((dance, tokens, api, person_api))

    # When Shop's owner deletes the app
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(app_url(app["id"])).status_code == 204

    # Then each token is refused, the app no longer exists to refresh them, and neither
    # person's grant is left
    for dance, tokens, api, person_api in authorized:
        assert_problem(api.get(PRODUCTS), 401)
        refreshed = dance.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 401
        assert refreshed.json() == {"error": "invalid_client"}
        assert person_api.get(GRANTS).json()["results"] == []


def test_narrowing_an_apps_scopes_narrows_its_tokens_at_their_next_request(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    # Given a token that writes to the catalog
    _, owner, owner_api = shop
    app = create(owner_api, scopes=["catalog.read", "catalog.write"])
    tokens = in_process(as_flow_app(app), wsgi_transport).tokens(
        email=owner.email, scope="catalog.read catalog.write"
    )
    api = bearer(tokens["access_token"])
    product = {"sku": "NAR-1", "name": "Before", "price": "1.00"}
    assert api.post(PRODUCTS, product, format="json").status_code == 201

    # When the app is narrowed to reading
    with django_capture_on_commit_callbacks(execute=True):
        narrowed = owner_api.patch(app_url(app["id"]), {"scopes": ["catalog.read"]}, format="json")
    assert narrowed.status_code == 200, narrowed.content

    # Then the same token may read, and no longer write, though its grant named catalog.write
    assert api.get(PRODUCTS).status_code == 200
    refused = api.post(PRODUCTS, {**product, "sku": "NAR-2"}, format="json")
    body = assert_problem(refused, 403, "permission-denied")
    assert body["required_permission"] == "catalog.write"
    skus = [item["sku"] for item in owner_api.get(PRODUCTS).json()["results"]]
    assert skus == ["NAR-1"]
