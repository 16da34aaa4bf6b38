"""The tenant resource: reading it, changing its name and settings, and deleting it."""

import pytest
from rest_framework.test import APIClient

from kernel import tasks as services
from kernel.context import operator_scope
from kernel.tasks import tenant_purge_task
from kernel.tenancy.models import Membership, Role, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.helpers import (
    API,
    ME,
    REFRESH,
    TOKEN,
    assert_problem,
    client_for,
    error_fields,
    outcome,
    owner_of,
    sign_in,
    tasks_run_inline,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme")]

TENANT = f"{API}/tenant/"


def tenant_row(tenant) -> Tenant | None:
    with outcome():
        return Tenant.objects.select_related("plan").filter(pk=tenant.pk).first()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_the_tenant_needs_a_credential(api_client, method):
    response = getattr(api_client, method)(TENANT, {}, format="json")

    assert_problem(response, 401, "not-authenticated")


def test_any_member_reads_their_tenant(tenant):
    client = client_for(make_member(tenant, roles=["viewer"]).user, tenant)

    response = client.get(TENANT)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": str(tenant.id),
        "name": "Acme",
        "slug": tenant.slug,
        "status": "active",
        "plan": "free",
        "settings": {},
        "require_mfa": False,
        # The free plan's retentions, the tenant having chosen none (tests/kernel/test_retention.py)
        "audit_retention_days": 365,
        "notification_retention_days": 30,
        "plan_audit_retention_days": 365,
        "plan_notification_retention_days": 30,
        "created_at": response.json()["created_at"],
    }


def test_each_member_sees_their_own_tenant_only(tenant):
    other = make_tenant(name="Other")
    client = client_for(owner_of(other), other)

    assert client.get(TENANT).json()["id"] == str(other.id)


def test_an_admin_changes_the_name_and_settings(
    tenant, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.patch(
            TENANT, {"name": "Acme Corp", "settings": {"locale": "fr"}}, format="json"
        )

    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["settings"]) == ("Acme Corp", {"locale": "fr"})
    row = tenant_row(tenant)
    assert (row.name, row.settings) == ("Acme Corp", {"locale": "fr"})
    # The next read shows it: the change invalidated the cached view of the tenant.
    assert admin_client.get(TENANT).json()["name"] == "Acme Corp"


def test_mass_assignment_on_the_tenant_is_ignored(tenant, admin_client):
    response = admin_client.patch(
        TENANT,
        {
            "name": "Renamed",
            "id": "00000000-0000-0000-0000-000000000001",
            "slug": "hijacked",
            "status": "suspended",
            "plan": "enterprise",
            "deleted_at": "2020-01-01T00:00:00Z",
            "created_at": "2020-01-01T00:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    row = tenant_row(tenant)
    assert row.name == "Renamed"
    assert (row.slug, row.status, row.plan.code) == (tenant.slug, "active", "free")
    assert row.deleted_at is None
    assert row.created_at == tenant.created_at


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": ""}, "name"), ({"name": "x" * 201}, "name"), ({"settings": [1, 2]}, "settings")],
)
def test_bad_changes_are_field_errors(tenant, admin_client, body, field):
    response = admin_client.patch(TENANT, body, format="json")

    assert error_fields(response) == {field}
    assert tenant_row(tenant).name == "Acme"


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "settings_value",
    [
        nested(458),  # a finding of the source review: it broke the tenant's authentication
        nested(6),
        {"blob": "x" * 16_400},
        {"k" * 101: 1},
        {"a": [[[[[1]]]]]},
        {"a": "\x00"},
    ],
    ids=["458 deep", "6 deep", "over 16 KB", "a long name", "deep lists", "NUL"],
)
def test_settings_are_bounded_like_product_attributes(tenant, admin_client, settings_value):
    response = admin_client.patch(TENANT, {"settings": settings_value}, format="json")

    assert error_fields(response) == {"settings"}
    assert tenant_row(tenant).settings == {}
    assert admin_client.get(TENANT).status_code == 200


def test_settings_at_the_bounds_are_taken(tenant, admin_client):
    value = {**nested(5), "blob": "x" * 16_000}

    response = admin_client.patch(TENANT, {"settings": value}, format="json")

    assert response.status_code == 200, response.content
    assert tenant_row(tenant).settings == value


def test_deeply_nested_settings_stored_before_the_bound_do_not_break_authentication(tenant):
    # Written by hand, as they could be before the bound existed
    with operator_scope("test: settings from before the bound"):
        Tenant.objects.filter(pk=tenant.pk).update(settings=nested(458))
    client = client_for(owner_of(tenant), tenant)

    for _ in range(3):  # resolved, cached, then served from the cached snapshot
        assert client.get(TENANT).status_code == 200
    key = client.post(
        f"{API}/api-keys/", {"name": "k", "permissions": ["catalog.read"]}, format="json"
    ).json()["key"]
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    for _ in range(3):
        assert machine.get(f"{API}/products/").status_code == 200


@pytest.mark.parametrize("role_name", ["editor", "viewer"])
def test_members_without_tenant_manage_cannot_change_or_delete_it(tenant, role_name):
    client = client_for(make_member(tenant, roles=[role_name]).user, tenant)

    assert_problem(client.patch(TENANT, {"name": "Mine"}, format="json"), 403, "permission-denied")
    assert_problem(client.delete(TENANT), 403, "permission-denied")
    row = tenant_row(tenant)
    assert (row.name, row.deleted_at) == ("Acme", None)


def test_an_admin_cannot_delete_the_tenant(tenant, admin_client):
    response = admin_client.delete(TENANT)

    body = assert_problem(response, 403, "permission-denied")
    assert "owner" in body["detail"]
    assert tenant_row(tenant).deleted_at is None


def test_the_owner_deletes_the_tenant_and_every_session_ends_at_once(
    tenant, admin_client, django_capture_on_commit_callbacks, monkeypatch
):
    # Given the owner and another member, both signed in (and their principals cached)
    owner = APIClient()
    owner_tokens = sign_in(owner, owner_of(tenant), tenant)
    assert owner.get(ME).status_code == 200
    assert admin_client.get(ME).status_code == 200
    queued = []
    monkeypatch.setattr(tenant_purge_task, "delay", lambda **kwargs: queued.append(kwargs))

    # When the owner deletes the tenant
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.delete(TENANT)
        # The purge is queued once the deletion commits, not before
        assert queued == []

    # Then it is soft-deleted and the purge is queued for it
    assert response.status_code == 204, response.content
    assert tenant_row(tenant).deleted_at is not None
    assert queued == [{"tenant_id": str(tenant.id)}]
    # ... and every token of the tenant is refused from the next request on
    assert_problem(owner.get(ME), 401, "not-authenticated")
    assert_problem(admin_client.get(TENANT), 401, "not-authenticated")
    refresh = APIClient().post(REFRESH, {"refresh": owner_tokens["refresh"]}, format="json")
    assert_problem(refresh, 401, "not-authenticated")
    # ... and nobody can sign in to it again
    sign_in_again = APIClient().post(
        TOKEN,
        {"email": owner_of(tenant).email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        format="json",
    )
    assert_problem(sign_in_again, 401, "not-authenticated")


def test_the_purge_task_deletes_the_tenant_and_its_rows(tenant, django_capture_on_commit_callbacks):
    # Given a deleted tenant with members, and another tenant
    make_member(tenant, roles=["editor"])
    bystander = make_tenant()
    owner = client_for(owner_of(tenant), tenant)

    # When it is deleted, with the purge task run inline after commit
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        assert owner.delete(TENANT).status_code == 204

    # Then the tenant and everything it owned are gone, and nothing else
    with outcome():
        assert not Tenant.objects.filter(pk=tenant.pk).exists()
        assert not Membership.objects.filter(tenant_id=tenant.pk).exists()
        assert not Role.objects.filter(tenant_id=tenant.pk).exists()
        assert Role.objects.filter(tenant=bystander).count() == 4
    assert tenant_row(bystander) is not None


def test_the_purge_leaves_a_tenant_that_is_not_deleted_alone(tenant):
    assert services.tenant_purge(tenant_id=tenant.id) is False

    assert tenant_row(tenant) is not None
