"""The GraphQL permission matrix: `PERMISSIONS` is the one table of what each Query and Mutation
field needs, and the schema's fields must be exactly its keys (a new field fails
test_the_table_names_every_field_of_the_schema until someone decides what it needs).

- Each field that needs a permission is called by members lacking it: one whose role holds every
  permission but that one, one whose role holds none, and a viewer where viewers lack it. Each
  gets FORBIDDEN, no data for the field, and the tenant's rows are as they were. The same call by
  an admin (every permission) succeeds, first for a read: a cached answer to the same document
  must not reach the refused member either.
- Each field that needs none is answered to a member whose role holds no permission at all.

The calls are built from the schema as the isolation matrix builds them
(tests/graphql/test_isolation_matrix.py), on objects of the caller's own tenant, so that the
refusal is the permission and not a lookup.
"""

import re

import pytest

from kernel.permissions import BUILTIN_ROLES, VIEWER, Perm
from tests.factories import make_member, make_role
from tests.graphql import test_isolation_matrix as matrix
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

# "Type.field" -> the permission it needs; None: any member of the tenant.
PERMISSIONS: dict[str, Perm | None] = {
    "Query.me": None,
    "Query.tenant": None,
    "Query.members": Perm.MEMBERS_READ,
    "Query.product": Perm.CATALOG_READ,
    "Query.products": Perm.CATALOG_READ,
    "Query.category": Perm.CATALOG_READ,
    "Query.categories": Perm.CATALOG_READ,
    "Query.notifications": Perm.NOTIFICATIONS_READ,
    "Mutation.productCreate": Perm.CATALOG_WRITE,
    "Mutation.productUpdate": Perm.CATALOG_WRITE,
    "Mutation.productDelete": Perm.CATALOG_WRITE,
    "Mutation.categoryCreate": Perm.CATALOG_WRITE,
    "Mutation.categoryUpdate": Perm.CATALOG_WRITE,
    "Mutation.categoryDelete": Perm.CATALOG_WRITE,
    "Mutation.notificationMarkRead": Perm.NOTIFICATIONS_READ,
}

FIELDS = {field.id: field for field in matrix.FIELDS}
VIEWER_CODES = BUILTIN_ROLES[VIEWER][1]


def every_permission_but(permission: Perm) -> list[Perm]:
    return [code for code in Perm if code != permission]


# How a member may lack a permission: the role they hold, made in their tenant.
LACKING = {
    "every-other-permission": lambda tenant, permission: (
        make_role(tenant, permissions=every_permission_but(permission)).name
    ),
    "no-permission": lambda tenant, permission: make_role(tenant, permissions=[]).name,
    "viewer": lambda tenant, permission: VIEWER,
}

REFUSALS = [
    pytest.param(FIELDS[name], lacking, id=f"{name}-{lacking}")
    for name, permission in PERMISSIONS.items()
    if permission is not None and name in FIELDS
    for lacking in LACKING
    if lacking != "viewer" or permission not in VIEWER_CODES
]
UNGUARDED = [
    pytest.param(FIELDS[name], id=name)
    for name, permission in PERMISSIONS.items()
    if permission is None and name in FIELDS
]


def test_the_table_names_every_field_of_the_schema():
    assert set(PERMISSIONS) == set(FIELDS)


def test_the_table_agrees_with_what_the_schema_says_each_field_needs():
    """A field's description that says "Needs <code>" names the code of the table."""
    said = {
        name: re.findall(r"Needs ([a-z_]+\.[a-z_]+)", field.definition.description or "")
        for name, field in FIELDS.items()
    }
    disagreeing = {
        name: (codes, PERMISSIONS.get(name))
        for name, codes in said.items()
        if codes and codes != [PERMISSIONS.get(name)]
    }
    assert not disagreeing


def test_every_kind_of_refusal_is_in_the_matrix():
    # A table or walk that yields nothing would make the matrix pass vacuously.
    refused = {(param.values[0].id, param.values[1]) for param in REFUSALS}
    assert ("Mutation.productCreate", "viewer") in refused
    assert ("Query.products", "no-permission") in refused
    assert ("Mutation.notificationMarkRead", "every-other-permission") in refused
    assert len(REFUSALS) >= 2 * len([code for code in PERMISSIONS.values() if code])


def arguments(field: matrix.Field, world: matrix.Tenancy) -> dict:
    """The call's own arguments: an object of the caller's tenant (theirs, where objects are a
    person's) for a field taking an id."""
    return {"id": str(matrix.make(field.kind, world).id)} if field.takes_id else {}


@pytest.mark.parametrize(("field", "lacking"), REFUSALS)
def test_a_member_without_the_permission_is_refused(field, lacking):
    permission = PERMISSIONS[field.id]
    admin = matrix.tenancy("Permissions")
    role = LACKING[lacking](admin.tenant, permission)
    member = make_member(admin.tenant, roles=(role,)).user
    refused = matrix.Tenancy(admin.tenant, member, client_for(member, admin.tenant))
    given = arguments(field, refused)
    # A read, first answered to the admin: what a cached answer to the same document could give.
    if field.root == "Query":
        matrix.assert_answered(matrix.call(admin.client, field, **given), field)
    before = matrix.tenant_rows(admin.tenant)

    # When the member lacking the permission calls the field
    body = matrix.call(refused.client, field, **given)

    # Then it is refused for the permission, and nothing changed
    assert matrix.codes(body)[:1] == ["FORBIDDEN"], body
    assert permission in body["errors"][0]["message"], body
    assert matrix.field_data(body, field) is None
    assert matrix.tenant_rows(admin.tenant) == before
    # And an admin's same call succeeds: the refusal was the permission.
    if field.root == "Mutation":
        matrix.assert_answered(matrix.call(admin.client, field, **arguments(field, admin)), field)


@pytest.mark.parametrize("field", UNGUARDED)
def test_a_field_needing_no_permission_answers_any_member(field):
    admin = matrix.tenancy("Permissions")
    member = make_member(admin.tenant, roles=(make_role(admin.tenant).name,)).user
    caller = matrix.Tenancy(admin.tenant, member, client_for(member, admin.tenant))

    body = matrix.call(caller.client, field, **arguments(field, caller))

    matrix.assert_answered(body, field)
