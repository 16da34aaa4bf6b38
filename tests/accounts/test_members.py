"""Members through the API: listing, changing roles, removing; the owner and grant rules."""

import threading
import time

import pytest
from django.db import connections, transaction
from rest_framework.test import APIClient

from accounts import services
from kernel.context import tenant_context
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem
from kernel.tenancy.models import Membership, MembershipRole, Role
from kernel.tenancy.selectors import membership_roles
from tests.factories import make_member, make_role, make_tenant
from tests.helpers import (
    API,
    ME,
    REFRESH,
    assert_not_found_for_every_method,
    assert_problem,
    backend_pid,
    client_for,
    error_fields,
    outcome,
    owner_of,
    sign_in,
    waiting_for_a_lock,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme")]

MEMBERS = f"{API}/members/"


def member_url(membership) -> str:
    return f"{MEMBERS}{membership.pk}/"


def role_id(tenant, name: str) -> str:
    with outcome():
        return str(Role.objects.get(tenant=tenant, name=name).pk)


def roles_of(membership) -> set[str]:
    with outcome():
        return set(
            Role.objects.filter(tenant_id=membership.tenant_id, memberships=membership).values_list(
                "name", flat=True
            )
        )


def membership_exists(membership) -> bool:
    with outcome():
        return Membership.objects.filter(pk=membership.pk).exists()


def owner_membership(tenant) -> Membership:
    with outcome():
        return Membership.objects.get(tenant=tenant, roles__name="owner")


# --- 401 and 403 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "detail"),
    [("get", False), ("get", True), ("patch", True), ("delete", True)],
)
def test_members_need_a_credential(api_client, tenant, method, detail):
    url = member_url(owner_membership(tenant)) if detail else MEMBERS

    response = getattr(api_client, method)(url, {"roles": []}, format="json")

    assert_problem(response, 401, "not-authenticated")


@pytest.mark.parametrize("role_name", ["editor", "viewer"])
def test_members_without_members_manage_cannot_change_or_remove_members(tenant, role_name):
    client = client_for(make_member(tenant, roles=[role_name]).user, tenant)
    target = make_member(tenant, roles=["viewer"])

    patch = client.patch(member_url(target), {"roles": [role_id(tenant, "editor")]})
    delete = client.delete(member_url(target))

    assert_problem(patch, 403, "permission-denied")
    assert_problem(delete, 403, "permission-denied")
    assert roles_of(target) == {"viewer"}


def test_a_role_without_members_read_cannot_list_members(tenant):
    catalog = make_role(tenant, name="catalog", permissions=[Perm.CATALOG_READ])
    client = client_for(make_member(tenant, roles=[catalog.name]).user, tenant)

    assert_problem(client.get(MEMBERS), 403, "permission-denied")
    assert_problem(client.get(member_url(owner_membership(tenant))), 403, "permission-denied")


# --- reading ----------------------------------------------------------------------------------


def test_a_viewer_lists_the_members_in_their_shape(tenant):
    viewer = make_member(tenant, roles=["viewer", "editor"], email="viewer@example.com")
    client = client_for(viewer.user, tenant)

    listed = client.get(MEMBERS)
    detail = client.get(member_url(viewer))

    assert listed.status_code == 200, listed.content
    assert [m["user"]["email"] for m in listed.json()["results"]] == [
        owner_of(tenant).email,
        "viewer@example.com",
    ]
    assert detail.status_code == 200
    assert detail.json() == {
        "id": str(viewer.pk),
        "user": {"id": str(viewer.user.pk), "email": "viewer@example.com", "name": ""},
        "roles": [
            {"id": role_id(tenant, "editor"), "name": "editor"},
            {"id": role_id(tenant, "viewer"), "name": "viewer"},
        ],
        "created_at": detail.json()["created_at"],
    }


def test_the_list_is_paginated_with_a_cursor(tenant):
    for _ in range(3):
        make_member(tenant)
    client = client_for(owner_of(tenant), tenant)

    first = client.get(MEMBERS, {"page_size": 2}).json()
    second = client.get(first["next"]).json()

    assert len(first["results"]) == 2
    assert len(second["results"]) == 2
    assert second["next"] is None
    ids = {m["id"] for m in first["results"]} | {m["id"] for m in second["results"]}
    assert len(ids) == 4


# --- changing roles ---------------------------------------------------------------------------


def test_an_admin_changes_a_members_roles(tenant, admin_client):
    member = make_member(tenant, roles=["viewer"])

    response = admin_client.patch(
        member_url(member), {"roles": [role_id(tenant, "editor")]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert [role["name"] for role in response.json()["roles"]] == ["editor"]
    assert roles_of(member) == {"editor"}


def test_a_changed_role_takes_effect_on_the_members_next_request(
    tenant, admin_client, django_capture_on_commit_callbacks
):
    # Given a member whose principal is cached by a first request
    member = make_member(tenant, roles=["viewer"])
    client = client_for(member.user, tenant)
    assert client.get(ME).json()["permissions"] == sorted(
        [Perm.CATALOG_READ, Perm.MEMBERS_READ, Perm.NOTIFICATIONS_READ]
    )

    # When an admin makes them an editor (and the change commits)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.patch(
            member_url(member), {"roles": [role_id(tenant, "editor")]}, format="json"
        )

    # Then their next request has the editor's permissions

    assert Perm.CATALOG_WRITE in client.get(ME).json()["permissions"]


@pytest.mark.parametrize(
    "roles",
    [
        [],
        ["00000000-0000-0000-0000-000000000001"],
        ["not-a-uuid"],
    ],
)
def test_roles_must_be_known_role_ids(tenant, admin_client, roles):
    member = make_member(tenant, roles=["viewer"])

    response = admin_client.patch(member_url(member), {"roles": roles}, format="json")

    assert error_fields(response) == {"roles"}
    assert roles_of(member) == {"viewer"}


def test_another_tenants_role_cannot_be_granted(tenant, admin_client):
    other = make_tenant()
    member = make_member(tenant, roles=["viewer"])

    response = admin_client.patch(
        member_url(member), {"roles": [role_id(other, "admin")]}, format="json"
    )

    assert error_fields(response) == {"roles"}
    assert roles_of(member) == {"viewer"}


def test_mass_assignment_on_a_member_is_ignored(tenant, admin_client):
    member = make_member(tenant, roles=["viewer"])
    other = make_tenant()
    stranger = make_member(other)

    response = admin_client.patch(
        member_url(member),
        {
            "roles": [role_id(tenant, "editor")],
            "id": "00000000-0000-0000-0000-000000000001",
            "user": str(stranger.user.pk),
            "tenant": str(other.id),
            "tenant_id": str(other.id),
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    with outcome():
        after = Membership.objects.get(pk=member.pk)
    assert (after.user_id, after.tenant_id) == (member.user_id, tenant.id)
    assert roles_of(member) == {"editor"}


# --- nobody grants what they do not hold ---------------------------------------------------


@pytest.fixture
def member_manager_client(tenant) -> APIClient:
    manager = make_role(
        tenant, name="member manager", permissions=[Perm.MEMBERS_MANAGE, Perm.MEMBERS_READ]
    )
    return client_for(make_member(tenant, roles=[manager.name]).user, tenant)


def test_a_role_with_permissions_the_granter_lacks_cannot_be_granted(tenant, member_manager_client):
    member = make_member(tenant, roles=["viewer"])
    make_role(tenant, name="directory", permissions=[Perm.MEMBERS_READ])

    # The viewer role carries catalog.read, which the member manager does not hold: they can
    # neither take it away ...
    response = member_manager_client.patch(
        member_url(member), {"roles": [role_id(tenant, "directory")]}, format="json"
    )
    assert_problem(response, 403, "permission-denied")
    # ... nor give the editor role.
    response = member_manager_client.patch(
        member_url(member),
        {"roles": [role_id(tenant, "viewer"), role_id(tenant, "editor")]},
        format="json",
    )
    assert_problem(response, 403, "permission-denied")
    assert roles_of(member) == {"viewer"}


def test_a_role_within_the_granters_permissions_can_be_granted(tenant, member_manager_client):
    make_role(tenant, name="directory", permissions=[Perm.MEMBERS_READ])
    member = make_member(tenant, roles=["directory"])
    make_role(tenant, name="directory plus", permissions=[Perm.MEMBERS_READ])

    response = member_manager_client.patch(
        member_url(member),
        {"roles": [role_id(tenant, "directory"), role_id(tenant, "directory plus")]},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert roles_of(member) == {"directory", "directory plus"}


def test_a_member_holding_more_than_the_remover_cannot_be_removed(tenant, member_manager_client):
    editor = make_member(tenant, roles=["editor"])

    assert_problem(member_manager_client.delete(member_url(editor)), 403, "permission-denied")
    assert membership_exists(editor)


# --- the owner role ------------------------------------------------------------------------


def test_an_admin_cannot_grant_the_owner_role(tenant, admin_client, admin):
    member = make_member(tenant, roles=["viewer"])

    for target in (member, admin):
        response = admin_client.patch(
            member_url(target), {"roles": [role_id(tenant, "owner")]}, format="json"
        )
        body = assert_problem(response, 403, "permission-denied")
        assert "owner" in body["detail"]
    assert roles_of(member) == {"viewer"}
    assert roles_of(admin) == {"admin"}


def test_an_admin_cannot_demote_or_remove_an_owner(tenant, admin_client):
    second_owner = make_member(tenant, roles=["owner"])

    patch = admin_client.patch(
        member_url(second_owner), {"roles": [role_id(tenant, "viewer")]}, format="json"
    )
    delete = admin_client.delete(member_url(second_owner))

    assert_problem(patch, 403, "permission-denied")
    assert_problem(delete, 403, "permission-denied")
    assert roles_of(second_owner) == {"owner"}


def test_an_owner_transfers_ownership(tenant, owner_client):
    owner = owner_membership(tenant)
    successor = make_member(tenant, roles=["admin"])

    promote = owner_client.patch(
        member_url(successor), {"roles": [role_id(tenant, "owner")]}, format="json"
    )
    step_down = owner_client.patch(
        member_url(owner), {"roles": [role_id(tenant, "admin")]}, format="json"
    )

    assert promote.status_code == 200, promote.content
    assert step_down.status_code == 200, step_down.content
    assert roles_of(successor) == {"owner"}
    assert roles_of(owner) == {"admin"}


# --- the last owner ------------------------------------------------------------------------


def test_the_last_owner_cannot_step_down(tenant, owner_client):
    owner = owner_membership(tenant)

    response = owner_client.patch(
        member_url(owner), {"roles": [role_id(tenant, "admin")]}, format="json"
    )

    body = assert_problem(response, 409, "conflict")
    assert "owner" in body["detail"]
    assert roles_of(owner) == {"owner"}


def test_the_last_owner_cannot_be_removed(tenant, owner_client):
    owner = owner_membership(tenant)

    assert_problem(owner_client.delete(member_url(owner)), 409, "conflict")
    assert membership_exists(owner)


def test_an_owner_may_leave_when_another_owner_remains(tenant, owner_client):
    owner = owner_membership(tenant)
    make_member(tenant, roles=["owner"])

    assert owner_client.delete(member_url(owner)).status_code == 204
    assert not membership_exists(owner)


# --- removing a member ----------------------------------------------------------------------


def test_removing_a_member_ends_their_sessions_in_that_tenant(
    tenant, admin_client, django_capture_on_commit_callbacks
):
    # Given a member signed in to this tenant and to another one
    member = make_member(tenant, roles=["editor"])
    elsewhere = make_tenant()
    make_member(elsewhere, user=member.user)
    member_client = APIClient()
    tokens = sign_in(member_client, member.user, tenant)
    other_client = client_for(member.user, elsewhere)
    assert member_client.get(ME).status_code == 200

    # When an admin removes them (and the removal commits)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.delete(member_url(member))

    # Then their tokens for this tenant are refused at once, access and refresh alike
    assert response.status_code == 204, response.content
    assert not membership_exists(member)
    assert_problem(member_client.get(ME), 401, "not-authenticated")
    assert_problem(member_client.get(MEMBERS), 401, "not-authenticated")
    assert_problem(
        APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json"),
        401,
        "not-authenticated",
    )
    # ... and their account and their other tenant are untouched
    assert other_client.get(ME).status_code == 200


# --- another tenant's members ---------------------------------------------------------------


def test_another_tenants_member_is_not_found(tenant, owner_client):
    other = make_tenant()
    theirs = make_member(other, roles=["viewer"])

    assert_not_found_for_every_method(
        owner_client,
        member_url(theirs),
        {"patch": {"roles": [role_id(tenant, "admin")]}, "delete": None},
    )

    assert membership_exists(theirs)
    assert roles_of(theirs) == {"viewer"}


def test_another_tenants_members_are_not_listed(tenant, owner_client):
    theirs = make_member(make_tenant(), email="theirs@example.com")

    emails = {m["user"]["email"] for m in owner_client.get(MEMBERS).json()["results"]}

    assert theirs.user.email not in emails


# --- two owners demoting each other at once -----------------------------------------------------


def _principal(membership: Membership) -> Principal:
    with tenant_context(membership.tenant_id):
        roles = membership_roles(membership=membership)
    return Principal(
        tenant=membership.tenant,
        user=membership.user,
        membership=membership,
        roles=frozenset(name for name, _ in roles),
        permissions=frozenset(code for _, codes in roles for code in codes),
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_demotions_of_the_last_two_owners_leave_one_owner():
    # Given a tenant with exactly two owners, committed, so that two connections see them
    tenant = make_tenant()
    first = owner_membership(tenant)
    second = make_member(tenant, roles=["owner"])
    with tenant_context(tenant.id):
        admin_role = Role.objects.get(name="admin")
    started, outcomes, pids = threading.Event(), {}, {}

    def demote(name: str, actor: Membership, target: Membership, hold: bool) -> None:
        try:
            with tenant_context(tenant.id), transaction.atomic():
                pids[name] = backend_pid()
                started.set()
                services.member_update_roles(
                    tenant=tenant, actor=_principal(actor), membership=target, roles=[admin_role]
                )
                outcomes[name] = "demoted"
                if hold:
                    # Keep the transaction open until the other demotion is queued behind it
                    # (or has given up waiting for it, if it does not wait).
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and not waiting_for_a_lock(
                        pids.get("second", -1)
                    ):
                        time.sleep(0.05)
        except Problem as problem:
            outcomes[name] = problem.status_code
        finally:
            connections.close_all()

    # When each owner demotes the other at the same time
    holder = threading.Thread(target=demote, args=("first", first, second, True))
    holder.start()
    started.wait(5)
    time.sleep(0.2)  # the first demotion has its locks by now
    challenger = threading.Thread(target=demote, args=("second", second, first, False))
    challenger.start()
    holder.join(20)
    challenger.join(20)

    # Then one demotion wins, the other is refused, and one owner remains
    assert sorted(map(str, outcomes.values())) == ["409", "demoted"], outcomes
    with outcome():
        owners = MembershipRole.objects.filter(tenant=tenant, role__name="owner").count()
    assert owners == 1
