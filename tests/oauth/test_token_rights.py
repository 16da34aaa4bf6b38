"""What an OAuth access token may do: the intersection of the scopes granted, the app's scopes
and the person's permissions, read again on every request, so that a role or a membership taken
away, or a suspended tenant, changes the token at once. It is never the person themselves: no
owner-only right, no account endpoint. Its writes are audited as the person through the app, and
its requests are counted in a bucket of the app's own."""

import uuid

import pytest
from rest_framework.test import APIClient

from kernel.tenancy.models import Plan
from tests.factories import DEFAULT_PASSWORD, make_member, make_role, make_tenant
from tests.helpers import API, ME, assert_problem, client_for, outcome, owner_of
from tests.oauth.conftest import bearer, registration
from tests.oauth.flow import in_process

pytestmark = pytest.mark.django_db

PRODUCTS = f"{API}/products/"
MEMBERS = f"{API}/members/"
INVITATIONS = f"{API}/invitations/"
TENANT = f"{API}/tenant/"
AUDIT = f"{API}/audit-events/"
PASSWORD_CHANGE = f"{API}/auth/password/change/"
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining")


def authorized(transport, owner_api: APIClient, person, scopes: list[str], **app) -> APIClient:
    """The owner registers an app with `scopes`, `person` grants it all of them: the app's API
    client with the token it was given."""
    _, flow_app = registration(owner_api, scopes=scopes, **app)
    tokens = in_process(flow_app, transport).tokens(email=person.email, scope=" ".join(scopes))
    assert sorted(tokens["scope"].split()) == sorted(scopes)
    return bearer(tokens["access_token"])


def role_ids(client: APIClient, *names: str) -> list[str]:
    roles = {role["name"]: role["id"] for role in client.get(f"{API}/roles/").json()["results"]}
    return [roles[name] for name in names]


def role_names(client: APIClient, membership) -> list[str]:
    return sorted(role["name"] for role in client.get(f"{MEMBERS}{membership.pk}/").json()["roles"])


def product(sku: str) -> dict:
    return {"sku": sku, "name": f"Product {sku}", "price": "1.00"}


def skus(client: APIClient) -> list[str]:
    return sorted(item["sku"] for item in client.get(PRODUCTS).json()["results"])


# --- the intersection --------------------------------------------------------------------------


def test_a_scope_granted_gives_nothing_the_person_does_not_hold(shop, wsgi_transport):
    # Given an app the owner registered with members.manage, and an editor (who may not manage
    # members) granting it that scope
    tenant, _, owner_api = shop
    editor = make_member(tenant, roles=["editor"]).user
    api = authorized(wsgi_transport, owner_api, editor, ["catalog.read", "members.manage"])

    # Then the token reads the catalog, but invites nobody
    assert api.get(PRODUCTS).status_code == 200
    invitation = {"email": "new@example.com", "roles": role_ids(owner_api, "viewer")}
    refused = api.post(INVITATIONS, invitation, format="json")
    body = assert_problem(refused, 403, "permission-denied")
    assert body["required_permission"] == "members.manage"
    # Nor does it have what the editor holds but did not grant (members.read)
    assert_problem(api.get(MEMBERS), 403, "permission-denied")
    assert owner_api.get(INVITATIONS).json()["results"] == []


def test_the_persons_permissions_are_read_again_on_every_request(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    # Given an editor's token, granted catalog.read and members.manage, that cannot invite (to
    # a role that carries no permission, which anyone who manages members may give)
    tenant, _, owner_api = shop
    make_role(tenant, name="guest", permissions=[])
    membership = make_member(tenant, roles=["editor"])
    api = authorized(wsgi_transport, owner_api, membership.user, ["catalog.read", "members.manage"])
    invitation = {"email": "new@example.com", "roles": role_ids(owner_api, "guest")}
    assert_problem(api.post(INVITATIONS, invitation, format="json"), 403, "permission-denied")

    # When the owner makes the editor an admin
    with django_capture_on_commit_callbacks(execute=True):
        promoted = owner_api.patch(
            f"{MEMBERS}{membership.pk}/", {"roles": role_ids(owner_api, "admin")}, format="json"
        )
    assert promoted.status_code == 200, promoted.content

    # Then the same token may now invite, and still only within what was granted
    assert api.post(INVITATIONS, invitation, format="json").status_code == 201
    assert_problem(api.post(PRODUCTS, format="json", data=product("P-1")), 403, "permission-denied")


def test_removing_the_role_that_held_catalog_write_refuses_writes_at_once(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    # Given a member holding editor and viewer, whose app token writes to the catalog
    tenant, _, owner_api = shop
    membership = make_member(tenant, roles=["editor", "viewer"])
    api = authorized(wsgi_transport, owner_api, membership.user, ["catalog.read", "catalog.write"])
    assert api.post(PRODUCTS, format="json", data=product("W-1")).status_code == 201

    # When the owner takes the editor role away
    with django_capture_on_commit_callbacks(execute=True):
        changed = owner_api.patch(
            f"{MEMBERS}{membership.pk}/", {"roles": role_ids(owner_api, "viewer")}, format="json"
        )
    assert changed.status_code == 200, changed.content

    # Then the token's next write is refused; it still reads, as the viewer role does
    refused = api.post(PRODUCTS, format="json", data=product("W-2"))
    assert assert_problem(refused, 403, "permission-denied")["required_permission"] == (
        "catalog.write"
    )
    assert api.get(PRODUCTS).status_code == 200
    assert skus(owner_api) == ["W-1"]


def test_removing_the_member_ends_the_token_at_once(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    tenant, _, owner_api = shop
    membership = make_member(tenant, roles=["editor"])
    api = authorized(wsgi_transport, owner_api, membership.user, ["catalog.read"])
    assert api.get(PRODUCTS).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"{MEMBERS}{membership.pk}/").status_code == 204

    assert_problem(api.get(PRODUCTS), 401)
    assert_problem(api.get(TENANT), 401)


def test_a_suspended_tenant_refuses_the_token_until_it_is_reactivated(
    shop, wsgi_transport, operator_client, django_capture_on_commit_callbacks
):
    # Given an app's token in use
    tenant, owner, owner_api = shop
    api = authorized(wsgi_transport, owner_api, owner, ["catalog.read"])
    assert api.get(PRODUCTS).status_code == 200

    def operator_action(action: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post(
                "/admin/tenants/tenant/", {"action": action, "_selected_action": [str(tenant.id)]}
            )
        assert response.status_code == 302

    # When an operator suspends the tenant, Then the token gets 403 tenant-suspended
    operator_action("suspend")
    assert_problem(api.get(PRODUCTS), 403, "tenant-suspended")

    # And once it is reactivated, the token works again
    operator_action("reactivate")
    assert api.get(PRODUCTS).status_code == 200


# --- never the person themselves ---------------------------------------------------------------


def test_an_app_cannot_do_what_only_an_owner_may_even_for_the_owner(
    shop, wsgi_transport, django_capture_on_commit_callbacks
):
    # Given the owner granted an app tenant.manage and members.manage, and a member who holds
    # a role without permissions
    tenant, owner, owner_api = shop
    make_role(tenant, name="guest", permissions=[])
    make_role(tenant, name="visitor", permissions=[])
    member = make_member(tenant, roles=["guest"])
    member_url = f"{MEMBERS}{member.pk}/"
    api = authorized(
        wsgi_transport, owner_api, owner, ["tenant.manage", "members.read", "members.manage"]
    )

    # Then it may rename the tenant and change the member's roles (what the scopes allow)
    with django_capture_on_commit_callbacks(execute=True):
        renamed = api.patch(TENANT, {"name": "Shop renamed"}, format="json")
    assert renamed.status_code == 200, renamed.content
    changed = api.patch(member_url, {"roles": role_ids(owner_api, "visitor")}, format="json")
    assert changed.status_code == 200, changed.content

    # But neither delete the tenant nor make the member an owner, which are the owner role's
    deleted = assert_problem(api.delete(TENANT), 403, "permission-denied")
    assert deleted["detail"] == "Only an owner can delete the tenant."
    transfer = api.patch(member_url, {"roles": role_ids(owner_api, "owner")}, format="json")
    assert "Only an owner" in assert_problem(transfer, 403, "permission-denied")["detail"]
    assert owner_api.get(TENANT).json()["name"] == "Shop renamed"
    assert role_names(owner_api, member) == ["visitor"]
    # The owner's own sign-in may do both
    promoted = owner_api.patch(member_url, {"roles": role_ids(owner_api, "owner")}, format="json")
    assert promoted.status_code == 200, promoted.content
    assert owner_api.delete(TENANT).status_code == 204


def test_the_persons_own_account_endpoints_refuse_an_app(shop, wsgi_transport):
    tenant, owner, owner_api = shop
    api = authorized(wsgi_transport, owner_api, owner, ["catalog.read", "openid", "profile"])

    assert_problem(api.get(ME), 403, "permission-denied")
    changed = api.post(
        PASSWORD_CHANGE,
        {"current_password": DEFAULT_PASSWORD, "new_password": "an app chose this password 7"},
        format="json",
    )
    assert_problem(changed, 403, "permission-denied")
    # The password is the one it was: the owner still signs in with it
    client_for(owner, tenant)


# --- audit -------------------------------------------------------------------------------------


def test_what_an_app_writes_is_audited_as_the_person_through_the_app(shop, wsgi_transport):
    # Given an editor's app token, and the editor's own sign-in
    tenant, _, owner_api = shop
    editor = make_member(tenant, roles=["editor"]).user
    body, flow_app = registration(
        owner_api, scopes=["catalog.read", "catalog.write"], name="Sync ✓"
    )
    tokens = in_process(flow_app, wsgi_transport).tokens(
        email=editor.email, scope="catalog.read catalog.write"
    )
    through_app = bearer(tokens["access_token"]).post(PRODUCTS, product("A-1"), format="json")
    themselves = client_for(editor, tenant).post(PRODUCTS, product("A-2"), format="json")
    assert through_app.status_code == themselves.status_code == 201

    events = owner_api.get(AUDIT, {"action": "catalog.product.created"}).json()["results"]

    by_product = {event["target_id"]: event for event in events}
    via_app = by_product[through_app.json()["id"]]
    assert via_app["actor_type"] == "user"
    assert via_app["actor_id"] == str(editor.pk)
    assert via_app["actor_label"] == editor.email
    assert via_app["actor_app_id"] == body["id"]
    assert via_app["actor_app_label"] == "Sync ✓"
    own = by_product[themselves.json()["id"]]
    assert own["actor_id"] == str(editor.pk)
    assert own["actor_app_id"] is None
    assert own["actor_app_label"] == ""


# --- rate limits -------------------------------------------------------------------------------


def rate(response) -> tuple[int, int]:
    return tuple(int(response[name]) for name in RATE_HEADERS)


def tenant_with_a_burst_of_20():
    """A tenant on a plan of its own: a burst of 20, refilled at one a minute, so that nothing
    the test does is undone by the clock."""
    with outcome():
        plan = Plan.objects.create(
            code=f"tiny-{uuid.uuid4().hex[:12]}", name="Tiny", requests_per_minute=1, burst=20
        )
    return make_tenant(name="Shop", plan_code=plan.code)


def test_an_app_is_counted_in_a_bucket_of_its_own_apart_from_the_persons(wsgi_transport, settings):
    # Given a tenant with a burst of 20, of which each credential may use a quarter (5)
    settings.RATELIMIT_CREDENTIAL_SHARE = 0.25
    tenant = tenant_with_a_burst_of_20()
    owner_api = client_for(owner_of(tenant), tenant)
    person = make_member(tenant, roles=["editor"]).user
    api = authorized(wsgi_transport, owner_api, person, ["catalog.read"])
    own = client_for(person, tenant)

    # When the app makes three requests, Then its own five count down
    assert [rate(api.get(TENANT)) for _ in range(3)] == [(5, 4), (5, 3), (5, 2)]
    # While the person's own sign-in starts from a full share of its own
    assert rate(own.get(TENANT)) == (5, 4)
    # And the app's count went on where it was
    assert rate(api.get(TENANT)) == (5, 1)

    # Once the app has used up its share, it is refused, and the person is not
    assert api.get(TENANT).status_code == 200
    refused = api.get(TENANT)
    assert_problem(refused, 429, "rate-limited")
    assert "credential" in refused.json()["detail"]
    served = own.get(TENANT)
    assert served.status_code == 200
    assert rate(served) == (5, 3)


def test_two_apps_of_one_person_have_a_bucket_each(wsgi_transport, settings):
    # Given a tenant with a burst of 20, of which each credential may use a quarter (5)
    settings.RATELIMIT_CREDENTIAL_SHARE = 0.25
    tenant = tenant_with_a_burst_of_20()
    owner_api = client_for(owner_of(tenant), tenant)
    person = make_member(tenant, roles=["editor"]).user
    first = authorized(wsgi_transport, owner_api, person, ["catalog.read"], name="First")
    second = authorized(wsgi_transport, owner_api, person, ["catalog.read"], name="Second")

    # When the person's first app makes two requests, Then the second app's share is whole
    assert [rate(first.get(TENANT)) for _ in range(2)] == [(5, 4), (5, 3)]
    assert rate(second.get(TENANT)) == (5, 4)
