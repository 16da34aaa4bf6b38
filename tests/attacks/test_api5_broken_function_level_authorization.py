"""OWASP API5:2023, broken function level authorization.

Proves that the functions meant for a kind of caller stay theirs: the operators' admin is for
staff only (a tenant's owner, by session or by token, is sent to its login page); an API key,
even one holding every permission code, reaches no endpoint meant for people and none of the
owner's own rights; a viewer is refused every write of every tenant route the URL walk finds
(custom actions such as `redeliver` and `read-all` included) that needs a code viewers lack; and
the `read-all` action marks only the caller's own notifications.
"""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from kernel.api.base import IsPerson
from kernel.permissions import BUILTIN_ROLES, VIEWER, Perm
from notifications.api.notifications import PersonOnly
from tests.attacks.support import (
    Tenancy,
    make_notification,
    notification_row,
    role_id,
    tenancy,
)
from tests.factories import DEFAULT_PASSWORD, make_member, make_user
from tests.helpers import API, assert_problem, client_for
from tests.kernel import test_isolation_matrix as matrix

pytestmark = pytest.mark.django_db

ADMIN_TENANTS = "/admin/tenants/tenant/"
VIEWER_CODES = BUILTIN_ROLES[VIEWER][1]
PERSON_ROUTES = [
    route
    for route in matrix.ROUTES
    if issubclass(route.view, PersonOnly) or IsPerson in route.view.permission_classes
]
VIEWER_REFUSED = [
    route
    for route in matrix.ROUTES
    if route.method != "get"
    and route.permission is not None
    and route.permission not in VIEWER_CODES
]


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Functions")


def key_with_every_code(own: Tenancy) -> APIClient:
    response = own.client.post(
        f"{API}/api-keys/", {"name": "all", "permissions": list(Perm)}, format="json"
    )
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {response.json()['key']}")
    return client


def test_the_admin_is_for_staff_only(own):
    # Given a tenant's owner signed in to the admin's session, and the same owner's token
    session = Client()
    session.login(email=own.owner.email, password=DEFAULT_PASSWORD)
    access = own.client._credentials["HTTP_AUTHORIZATION"]

    by_session = session.get(ADMIN_TENANTS)
    by_token = Client().get(ADMIN_TENANTS, HTTP_AUTHORIZATION=access)

    # Then both are sent to the admin's login, and the staff operator is let in
    for response in (by_session, by_token):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    operator = Client()
    operator.force_login(make_user(is_staff=True, is_superuser=True))
    assert operator.get(ADMIN_TENANTS).status_code == 200


def test_the_walk_finds_the_people_only_routes():
    assert {route.template for route in PERSON_ROUTES} >= {
        f"{API}/auth/me/",
        f"{API}/auth/password/change/",
        f"{API}/notifications/",
        f"{API}/notification-preferences/",
    }


@pytest.mark.parametrize("route", PERSON_ROUTES, ids=lambda route: route.id)
def test_an_api_key_with_every_code_reaches_no_people_only_route(own, route):
    key = key_with_every_code(own)
    world = matrix.Tenancy(own.tenant, own.owner, own.client)
    url = matrix.objects_for(route, world)[0] if route.parameters else route.template

    response = matrix.request(key, route.method, url)

    assert_problem(response, 403, "permission-denied")


def test_an_api_key_with_every_code_has_none_of_the_owners_rights(own):
    key = key_with_every_code(own)
    member = make_member(own.tenant, roles=("viewer",))

    deleted = key.delete(f"{API}/tenant/")
    promoted = key.patch(
        f"{API}/members/{member.pk}/", {"roles": [role_id(own.tenant, "owner")]}, format="json"
    )

    assert_problem(deleted, 403, "permission-denied")
    assert_problem(promoted, 403, "permission-denied")


@pytest.mark.parametrize("route", VIEWER_REFUSED, ids=lambda route: route.id)
def test_a_viewer_is_refused_every_write_it_lacks_the_code_for(own, route):
    viewer = client_for(make_member(own.tenant, roles=(VIEWER,)).user, own.tenant)
    world = matrix.Tenancy(own.tenant, own.owner, own.client)
    url = matrix.objects_for(route, world)[0] if route.parameters else route.template

    response = matrix.request(viewer, route.method, url)

    assert_problem(response, 403, "permission-denied")


def test_the_custom_write_actions_are_among_those_refused():
    refused = {route.id for route in VIEWER_REFUSED}
    assert f"POST {API}/webhooks/{{pk}}/deliveries/{{delivery_id}}/redeliver/" in refused
    assert f"POST {API}/products/import/" in refused


def test_read_all_marks_only_the_callers_own_notifications(own):
    colleague = make_member(own.tenant, roles=(VIEWER,)).user
    mine = make_notification(own.tenant, colleague)
    theirs = make_notification(own.tenant, own.owner)

    response = client_for(colleague, own.tenant).post(f"{API}/notifications/read-all/")

    assert response.json() == {"updated": 1}
    assert notification_row(mine).read_at is not None
    assert notification_row(theirs).read_at is None
