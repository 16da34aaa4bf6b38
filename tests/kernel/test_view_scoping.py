"""The tenant views' guard and escape hatch (kernel/api/base.py): a view cannot override
`get_queryset`/`get_object`, and the one that must serve its own rows names it
`dangerously_get_queryset`/`dangerously_get_object`, which still cannot cross tenants."""

import pytest

from kernel.api.base import TenantAPIView, TenantViewSet
from kernel.context import operator_scope
from kernel.tenancy.models import Role
from tests.factories import make_role, make_tenant
from tests.helpers import API, assert_problem, client_for, member_with_role, owner_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.kernel.scoping_views")]

BUILTIN_ROLES = f"{API}/test/builtin-roles/"
OWNER_ROLE = f"{API}/test/owner-role/"


@pytest.mark.parametrize("name", ["get_queryset", "get_object"])
@pytest.mark.parametrize("base", [TenantViewSet, TenantAPIView])
def test_a_view_that_overrides_the_scoped_methods_is_refused_when_defined(base, name):
    with pytest.raises(TypeError, match=f"dangerously_{name}"):
        type("Leaky", (base,), {name: lambda self: None, "__module__": __name__})


def test_the_hatch_serves_its_own_rows_and_row_security_still_keeps_tenants_apart():
    # Given two tenants, each with a role of its own besides the built-in ones
    alpha, beta = make_tenant(name="Alpha"), make_tenant(name="Beta")
    make_role(alpha, name="alpha-only")
    make_role(beta, name="beta-only")

    # When the owner of one lists through a view whose queryset has no tenant filter at all
    response = client_for(owner_of(alpha), alpha).get(BUILTIN_ROLES)

    # Then the hatch decided which rows (the built-in ones, not the tenant's own role) and the
    # scoped manager and row-level security kept them to the caller's tenant
    assert response.status_code == 200, response.content
    names = [role["name"] for role in response.json()]
    assert names == ["admin", "editor", "owner", "viewer"]
    with operator_scope("test: the roles of the tenant"):
        alpha_ids = {
            str(pk) for pk in Role.objects.filter(tenant=alpha).values_list("pk", flat=True)
        }
    assert {role["id"] for role in response.json()} <= alpha_ids


def test_the_hatch_cannot_reach_another_tenants_row_by_its_id():
    alpha, beta = make_tenant(name="Alpha"), make_tenant(name="Beta")
    with operator_scope("test: another tenant's role"):
        betas_owner_role = Role.objects.get(tenant=beta, name="owner")
    client = client_for(owner_of(alpha), alpha)

    assert_problem(client.get(f"{BUILTIN_ROLES}{betas_owner_role.pk}/"), 404, "not-found")


def test_the_object_hatch_answers_instead_of_the_scoped_look_up():
    alpha = make_tenant(name="Alpha")
    client = client_for(owner_of(alpha), alpha)
    role = make_role(alpha, name="ops")

    # Any id: the hatch returns the owner role, where the scoped look-up would give `ops`
    response = client.get(f"{OWNER_ROLE}{role.pk}/")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "owner"


def test_a_missing_permission_is_named_in_the_403():
    # A first-hour finding: the 403 did not say which permission was missing.
    alpha = make_tenant(name="Alpha")
    viewer = client_for(member_with_role(alpha, "viewer"), alpha)

    response = viewer.post(f"{API}/products/", {"sku": "X-1"}, format="json")

    body = assert_problem(response, 403, "permission-denied")
    assert body["detail"] == "This action needs catalog.write."
    assert body["required_permission"] == "catalog.write"
