"""The grants a person gave third-party apps, through /api/v1/oauth-grants/: each person sees and
revokes their own only, in the tenant they signed in to, with the app and the tenant that
registered it; an API key and the app itself are refused; a revocation stops the app's token at
once; consent and revocation are in the audit log."""

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import make_member, make_tenant
from tests.helpers import API, assert_problem, client_for, member_with_role, owner_of
from tests.oauth.conftest import GRANTS, bearer, registration
from tests.oauth.flow import Dance, in_process

pytestmark = pytest.mark.django_db

PRODUCTS = f"{API}/products/"
AUDIT = f"{API}/audit-events/"
GRANT_FIELDS = {"id", "app", "scopes", "created_at", "updated_at"}


def grant_url(grant_id) -> str:
    return f"{GRANTS}{grant_id}/"


@dataclass
class Granted:
    person: Any
    # The app's registration answer, and the token answer it was given
    app: dict
    tokens: dict
    # The person's own sign-in, and the app's side of the dance
    person_api: APIClient
    dance: Dance

    def introspected(self) -> dict:
        """What the token endpoint's sibling, introspection, tells the app of its token."""
        with self.dance.client() as backend:
            response = backend.post(
                "/oauth/introspect/",
                data={"token": self.tokens["access_token"]},
                auth=(self.app["client_id"], self.app["client_secret"]),
            )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def vendor():
    """A tenant that registers an app the people of other tenants authorize."""
    tenant = make_tenant(name="Vendor Labs")
    return tenant, client_for(owner_of(tenant), tenant)


@pytest.fixture
def granted(shop, vendor, wsgi_transport):
    """An editor of Shop who authorized Vendor Labs' app in Shop."""
    tenant, _, _ = shop
    _, vendor_api = vendor
    body, app = registration(vendor_api, name="Vendor sync", scopes=["catalog.read", "openid"])
    person = member_with_role(tenant, "editor")
    dance = in_process(app, wsgi_transport)
    tokens = dance.tokens(email=person.email, scope="catalog.read openid", tenant=tenant.id)
    return Granted(person, body, tokens, client_for(person, tenant), dance)


def test_a_person_lists_the_apps_they_authorized_with_the_tenant_that_registered_each(granted):
    app, person_api = granted.app, granted.person_api

    response = person_api.get(GRANTS)

    assert response.status_code == 200, response.content
    (grant,) = response.json()["results"]
    assert set(grant) == GRANT_FIELDS
    assert grant["app"] == {
        "id": app["id"],
        "name": "Vendor sync",
        "client_id": app["client_id"],
        "tenant": "Vendor Labs",
    }
    assert grant["scopes"] == ["catalog.read", "openid"]
    assert person_api.get(grant_url(grant["id"])).json() == grant
    # No secret of the app's is in it
    assert app["client_secret"] not in response.content.decode()


def test_another_person_of_the_tenant_sees_nothing_of_it_and_cannot_revoke_it(shop, granted):
    # Given the owner of the same tenant, who holds every permission
    _, _, owner_api = shop
    tokens, person_api = granted.tokens, granted.person_api
    (grant,) = person_api.get(GRANTS).json()["results"]

    # Then they list no grant, and the person's is not found for them, to read or revoke
    assert owner_api.get(GRANTS).json()["results"] == []
    assert_problem(owner_api.get(grant_url(grant["id"])), 404, "not-found")
    assert_problem(owner_api.delete(grant_url(grant["id"])), 404, "not-found")
    # And the grant holds
    assert bearer(tokens["access_token"]).get(PRODUCTS).status_code == 200
    assert [g["id"] for g in person_api.get(GRANTS).json()["results"]] == [grant["id"]]


def test_the_grants_in_another_tenant_of_the_same_person_are_not_listed(shop, granted):
    # Given the person is also a member of another tenant, signed in there
    person, person_api = granted.person, granted.person_api
    other = make_tenant(name="Other shop")
    make_member(other, roles=["viewer"], user=person)
    elsewhere = client_for(person, other)
    (grant,) = person_api.get(GRANTS).json()["results"]

    # Then the grant they gave in Shop is not among that tenant's
    assert elsewhere.get(GRANTS).json()["results"] == []
    assert_problem(elsewhere.get(grant_url(grant["id"])), 404, "not-found")


def test_an_api_key_cannot_list_or_revoke_grants(shop, granted):
    _, _, owner_api = shop
    person_api = granted.person_api
    (grant,) = person_api.get(GRANTS).json()["results"]
    created = owner_api.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": ["catalog.read"]}, format="json"
    )
    assert created.status_code == 201, created.content
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {created.json()['key']}")

    assert_problem(machine.get(GRANTS), 403, "permission-denied")
    assert_problem(machine.get(grant_url(grant["id"])), 403, "permission-denied")
    assert_problem(machine.delete(grant_url(grant["id"])), 403, "permission-denied")
    assert len(person_api.get(GRANTS).json()["results"]) == 1


def test_an_app_cannot_list_or_revoke_the_grants_it_holds(granted):
    tokens, person_api = granted.tokens, granted.person_api
    (grant,) = person_api.get(GRANTS).json()["results"]
    api = bearer(tokens["access_token"])

    assert_problem(api.get(GRANTS), 403, "permission-denied")
    assert_problem(api.get(grant_url(grant["id"])), 403, "permission-denied")
    assert_problem(api.delete(grant_url(grant["id"])), 403, "permission-denied")
    assert api.get(PRODUCTS).status_code == 200
    assert len(person_api.get(GRANTS).json()["results"]) == 1


def test_revoking_a_grant_stops_the_apps_token_at_once(granted, django_capture_on_commit_callbacks):
    tokens, person_api = granted.tokens, granted.person_api
    api = bearer(tokens["access_token"])
    (grant,) = person_api.get(GRANTS).json()["results"]
    assert api.get(PRODUCTS).status_code == 200
    assert granted.introspected()["active"] is True

    with django_capture_on_commit_callbacks(execute=True):
        revoked = person_api.delete(grant_url(grant["id"]))

    assert revoked.status_code == 204
    assert_problem(api.get(PRODUCTS), 401)
    assert granted.introspected() == {"active": False}
    assert person_api.get(GRANTS).json()["results"] == []
    assert_problem(person_api.get(grant_url(grant["id"])), 404, "not-found")
    assert_problem(person_api.delete(grant_url(grant["id"])), 404, "not-found")


def test_consent_and_revocation_are_in_the_tenants_audit_log(shop, granted, vendor):
    # Given the person revoked the grant they gave
    _, _, owner_api = shop
    person, app, person_api = granted.person, granted.app, granted.person_api
    (grant,) = person_api.get(GRANTS).json()["results"]
    assert person_api.delete(grant_url(grant["id"])).status_code == 204

    # Then the tenant the grant was given in holds both events, about that grant
    events = owner_api.get(AUDIT, {"action": "oauth.grant.*"}).json()["results"]
    assert [event["action"] for event in events] == ["oauth.grant.revoked", "oauth.grant.created"]
    revoked, created = events
    for event in events:
        assert event["target_type"] == "oauth_grant"
        assert event["target_id"] == grant["id"]
        assert event["actor_type"] == "user"
        assert event["actor_id"] == str(person.pk)
        assert event["actor_label"] == person.email
    # The consent was given through the app; the revocation by the person alone
    assert created["actor_app_id"] == app["id"]
    assert created["actor_app_label"] == "Vendor sync"
    assert created["changes"] == {
        "app": [None, "Vendor sync"],
        "scopes": [None, ["catalog.read", "openid"]],
    }
    assert revoked["actor_app_id"] is None
    assert revoked["changes"] == {
        "app": ["Vendor sync", None],
        "scopes": [["catalog.read", "openid"], None],
    }
    # And the vendor's tenant, whose app it is, holds neither
    _, vendor_api = vendor
    assert vendor_api.get(AUDIT, {"action": "oauth.grant.*"}).json()["results"] == []
