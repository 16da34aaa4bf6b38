"""Roles and permission codes through the API: who may read, define and change them."""

import pytest
from rest_framework.test import APIClient

from kernel.permissions import PERMISSION_DESCRIPTIONS, Perm
from kernel.tenancy.models import Role
from tests.factories import make_member, make_role, make_tenant
from tests.helpers import (
    API,
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    member_with_role,
    outcome,
    owner_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme")]

ROLES = f"{API}/roles/"
PERMISSIONS = f"{API}/permissions/"


def role_url(role) -> str:
    return f"{ROLES}{role.pk}/"


def role_named(tenant, name: str) -> Role:
    with outcome():
        return Role.objects.get(tenant=tenant, name=name)


def role_exists(tenant, **filters) -> bool:
    with outcome():
        return Role.objects.filter(tenant=tenant, **filters).exists()


# --- permissions ---------------------------------------------------------------------------


def test_permissions_need_a_credential(api_client):
    assert_problem(api_client.get(PERMISSIONS), 401, "not-authenticated")


def test_any_member_lists_the_permission_codes_with_descriptions(tenant):
    # Given a viewer, who holds none of the management permissions
    client = client_for(member_with_role(tenant, "viewer"), tenant)

    # When they list the permissions
    response = client.get(PERMISSIONS)

    # Then every code is there, with its description, in the list shape of the API
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next"] is None
    assert {item["code"]: item["description"] for item in body["results"]} == {
        str(code): description for code, description in PERMISSION_DESCRIPTIONS.items()
    }


# --- reading roles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", ""),
        ("post", ""),
        ("get", "{id}/"),
        ("put", "{id}/"),
        ("patch", "{id}/"),
        ("delete", "{id}/"),
    ],
)
def test_roles_need_a_credential(api_client, tenant, method, path):
    url = ROLES + path.format(id=role_named(tenant, "viewer").pk)
    assert_problem(getattr(api_client, method)(url, {}, format="json"), 401, "not-authenticated")


def test_a_viewer_lists_and_reads_the_roles(tenant):
    client = client_for(member_with_role(tenant, "viewer"), tenant)

    listed = client.get(ROLES)
    viewer = role_named(tenant, "viewer")
    detail = client.get(role_url(viewer))

    assert listed.status_code == 200, listed.content
    assert [role["name"] for role in listed.json()["results"]] == [
        "admin",
        "editor",
        "owner",
        "viewer",
    ]
    assert detail.status_code == 200
    assert detail.json() == {
        "id": str(viewer.pk),
        "name": "viewer",
        "description": viewer.description,
        "permissions": sorted(viewer.permissions),
        "is_builtin": True,
        "created_at": detail.json()["created_at"],
        "updated_at": detail.json()["updated_at"],
    }


def test_roles_are_read_with_members_read_only(tenant):
    # Given a role with nothing but catalog access
    reader = make_role(tenant, name="catalog only", permissions=[Perm.CATALOG_READ])
    client = client_for(make_member(tenant, roles=[reader.name]).user, tenant)

    # Then it cannot see the roles
    assert_problem(client.get(ROLES), 403, "permission-denied")


# --- creating roles ---------------------------------------------------------------------------


def test_an_admin_creates_a_role_from_permission_codes(tenant, admin_client):
    response = admin_client.post(
        ROLES,
        {
            "name": "Support",
            "description": "Answers customers",
            "permissions": [Perm.CATALOG_READ, Perm.AUDIT_READ, Perm.CATALOG_READ],
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"].endswith(f"{ROLES}{body['id']}/")
    assert body["permissions"] == [Perm.AUDIT_READ, Perm.CATALOG_READ]
    assert body["is_builtin"] is False
    role = role_named(tenant, "Support")
    assert (role.description, role.permissions) == ("Answers customers", body["permissions"])


@pytest.mark.parametrize("role_name", ["editor", "viewer"])
def test_members_without_roles_manage_cannot_create_roles(tenant, role_name):
    client = client_for(member_with_role(tenant, role_name), tenant)

    response = client.post(ROLES, {"name": "x", "permissions": []}, format="json")

    assert_problem(response, 403, "permission-denied")
    assert not role_exists(tenant, name="x")


def test_unknown_permission_codes_are_a_field_error(tenant, admin_client):
    response = admin_client.post(
        ROLES, {"name": "odd", "permissions": ["catalog.read", "root.everything"]}, format="json"
    )

    assert error_fields(response) == {"permissions"}
    assert "root.everything" in response.json()["errors"][0]["message"]
    assert not role_exists(tenant, name="odd")


def test_a_role_name_is_unique_per_tenant_whatever_the_case(tenant, admin_client):
    response = admin_client.post(ROLES, {"name": "OWNER", "permissions": []}, format="json")

    assert_problem(response, 409, "conflict")


def test_the_same_role_name_may_exist_in_another_tenant(tenant, admin_client):
    other = make_tenant()
    make_role(other, name="Support")

    response = admin_client.post(ROLES, {"name": "Support", "permissions": []}, format="json")

    assert response.status_code == 201, response.content


def test_mass_assignment_on_create_is_ignored(tenant, admin_client):
    other = make_tenant()

    response = admin_client.post(
        ROLES,
        {
            "name": "sneaky",
            "permissions": [],
            "id": "00000000-0000-0000-0000-000000000001",
            "is_builtin": True,
            "tenant": str(other.id),
            "tenant_id": str(other.id),
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    role = role_named(tenant, "sneaky")
    assert str(role.pk) != "00000000-0000-0000-0000-000000000001"
    assert (role.is_builtin, role.tenant_id) == (False, tenant.id)


# --- nobody grants what they do not hold ---------------------------------------------------


@pytest.fixture
def role_manager_client(tenant) -> APIClient:
    """A member whose only powers are over roles, plus reading the catalog."""
    manager = make_role(
        tenant,
        name="role manager",
        permissions=[Perm.ROLES_MANAGE, Perm.MEMBERS_READ, Perm.CATALOG_READ],
    )
    return client_for(make_member(tenant, roles=[manager.name]).user, tenant)


def test_a_role_cannot_carry_a_permission_its_creator_lacks(tenant, role_manager_client):
    response = role_manager_client.post(
        ROLES, {"name": "writer", "permissions": [Perm.CATALOG_WRITE]}, format="json"
    )

    body = assert_problem(response, 403, "permission-denied")
    assert Perm.CATALOG_WRITE in body["detail"]
    assert not role_exists(tenant, name="writer")


def test_a_role_within_the_creators_permissions_is_allowed(tenant, role_manager_client):
    response = role_manager_client.post(
        ROLES, {"name": "reader", "permissions": [Perm.CATALOG_READ]}, format="json"
    )

    assert response.status_code == 201, response.content


def test_a_role_cannot_be_raised_beyond_the_updaters_permissions(tenant, role_manager_client):
    reader = make_role(tenant, name="reader", permissions=[Perm.CATALOG_READ])

    response = role_manager_client.patch(
        role_url(reader),
        {"permissions": [Perm.CATALOG_READ, Perm.WEBHOOKS_MANAGE]},
        format="json",
    )

    assert_problem(response, 403, "permission-denied")
    assert role_named(tenant, "reader").permissions == [Perm.CATALOG_READ]


def test_a_role_carrying_more_than_the_updater_holds_cannot_be_cut_down(
    tenant, role_manager_client
):
    # Taking a permission away from a role takes it from everyone who holds the role.
    hooks = make_role(tenant, name="hooks", permissions=[Perm.WEBHOOKS_MANAGE, Perm.CATALOG_READ])

    response = role_manager_client.patch(
        role_url(hooks), {"permissions": [Perm.CATALOG_READ]}, format="json"
    )

    assert_problem(response, 403, "permission-denied")
    assert Perm.WEBHOOKS_MANAGE in role_named(tenant, "hooks").permissions


def test_roles_manage_brings_members_read_so_that_its_holder_can_see_roles(tenant, admin_client):
    # Given a role created with roles.manage alone
    created = admin_client.post(
        ROLES, {"name": "roles only", "permissions": [Perm.ROLES_MANAGE]}, format="json"
    )
    assert created.json()["permissions"] == [Perm.MEMBERS_READ, Perm.ROLES_MANAGE]

    # Then its holder can list the roles it manages
    holder = client_for(make_member(tenant, roles=["roles only"]).user, tenant)
    assert holder.get(ROLES).status_code == 200


# --- changing and deleting ----------------------------------------------------------------


def test_a_custom_role_is_changed_with_put_and_patch(tenant, admin_client):
    support = make_role(tenant, name="support", permissions=[Perm.CATALOG_READ])

    put = admin_client.put(
        role_url(support),
        {"name": "Support", "description": "Front line", "permissions": [Perm.AUDIT_READ]},
        format="json",
    )
    patch = admin_client.patch(role_url(support), {"description": "Second line"}, format="json")

    assert put.status_code == 200, put.content
    assert patch.status_code == 200, patch.content
    role = role_named(tenant, "Support")
    assert (role.description, role.permissions) == ("Second line", [Perm.AUDIT_READ])


def test_a_put_without_every_field_is_a_validation_error(tenant, admin_client):
    support = make_role(tenant, name="support", permissions=[Perm.CATALOG_READ])

    response = admin_client.put(role_url(support), {"name": "renamed"}, format="json")

    assert error_fields(response) == {"permissions"}
    assert role_named(tenant, "support").permissions == [Perm.CATALOG_READ]


def test_mass_assignment_on_update_is_ignored(tenant, admin_client):
    support = make_role(tenant, name="support", permissions=[Perm.CATALOG_READ])
    other = make_tenant()

    response = admin_client.patch(
        role_url(support),
        {"is_builtin": True, "id": "00000000-0000-0000-0000-000000000001", "tenant": str(other.id)},
        format="json",
    )

    assert response.status_code == 200, response.content
    role = role_named(tenant, "support")
    assert (role.pk, role.is_builtin, role.tenant_id) == (support.pk, False, tenant.id)


@pytest.mark.parametrize("role_name", ["owner", "admin", "editor", "viewer"])
def test_built_in_roles_cannot_be_changed_or_deleted(tenant, role_name):
    client = client_for(owner_of(tenant), tenant)
    role = role_named(tenant, role_name)

    responses = [
        client.patch(role_url(role), {"permissions": []}, format="json"),
        client.put(role_url(role), {"name": "mine", "permissions": []}, format="json"),
        client.delete(role_url(role)),
    ]

    for response in responses:
        assert_problem(response, 409, "conflict")
    after = role_named(tenant, role_name)
    assert (after.name, after.permissions) == (role.name, role.permissions)


def test_an_unused_role_is_deleted(tenant, admin_client):
    support = make_role(tenant, name="support")

    assert admin_client.delete(role_url(support)).status_code == 204

    assert not role_exists(tenant, pk=support.pk)


def test_a_role_held_by_a_member_cannot_be_deleted(tenant, admin_client):
    support = make_role(tenant, name="support")
    make_member(tenant, roles=["support"])

    assert_problem(admin_client.delete(role_url(support)), 409, "conflict")
    assert role_exists(tenant, pk=support.pk)


def test_a_role_offered_by_a_pending_invitation_cannot_be_deleted(tenant, admin_client):
    support = make_role(tenant, name="support")
    invited = admin_client.post(
        f"{API}/invitations/", {"email": "new@example.com", "roles": [str(support.pk)]}
    )
    assert invited.status_code == 201, invited.content

    assert_problem(admin_client.delete(role_url(support)), 409, "conflict")

    # Once the invitation is revoked, nothing stands in the way.
    assert admin_client.delete(f"{API}/invitations/{invited.json()['id']}/").status_code == 204
    assert admin_client.delete(role_url(support)).status_code == 204


@pytest.mark.parametrize("role_name", ["editor", "viewer"])
def test_members_without_roles_manage_cannot_change_or_delete_roles(tenant, role_name):
    support = make_role(tenant, name="support", permissions=[Perm.CATALOG_READ])
    client = client_for(member_with_role(tenant, role_name), tenant)

    for response in (
        client.patch(role_url(support), {"name": "renamed"}, format="json"),
        client.put(role_url(support), {"name": "renamed", "permissions": []}, format="json"),
        client.delete(role_url(support)),
    ):
        assert_problem(response, 403, "permission-denied")
    assert role_named(tenant, "support").permissions == [Perm.CATALOG_READ]


# --- another tenant's roles ---------------------------------------------------------------


def test_another_tenants_role_is_not_found(tenant, admin_client):
    other = make_tenant()
    theirs = make_role(other, name="theirs", permissions=[Perm.CATALOG_READ])

    assert_not_found_for_every_method(
        admin_client,
        role_url(theirs),
        {
            "patch": {"name": "mine"},
            "put": {"name": "mine", "permissions": []},
            "delete": None,
        },
    )

    after = role_named(other, "theirs")
    assert (after.name, after.permissions) == ("theirs", [Perm.CATALOG_READ])


def test_another_tenants_roles_are_not_listed(tenant, admin_client):
    make_role(make_tenant(), name="theirs")

    names = {role["name"] for role in admin_client.get(ROLES).json()["results"]}

    assert "theirs" not in names
