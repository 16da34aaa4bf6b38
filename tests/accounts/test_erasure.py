"""A person's erasure (GDPR article 17, accounts/erasure.py): `DELETE /api/v1/auth/me/` with their
password deactivates them at once and erases them in a job; what the database keeps of them
afterwards is searched for, column by column, in every table."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from accounts.tasks import user_erasure_sweep_task
from kernel import audit_chain
from kernel.context import operator_scope, tenant_context
from kernel.erasure import ErasedPerson
from kernel.tenancy.models import AuditEvent, PlatformAuditEvent
from notifications.models import Notification
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant, make_user
from tests.helpers import (
    ME,
    REFRESH,
    TOKEN,
    assert_problem,
    client_for,
    outcome,
    owner_of,
    sent_through_the_broker,
    sign_in,
    tasks_run_inline,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Erasure Home", plan_code="pro")]

API = "/api/v1"
EMAIL = "zoe.quixote-erasable@privacy.example"
NAME = "Zoë Quixote-Erasable"
User = get_user_model()


def text_columns() -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
            " AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
            " AND table_name IN (SELECT tablename FROM pg_tables"
            "                    WHERE schemaname = current_schema())"
        )
        return cursor.fetchall()


def rows_mentioning(*needles: str) -> list[tuple[str, str, str]]:
    """Every (table, column, value) of the database that holds one of `needles`, whatever the
    case: read as the schema owner, to whom no row-level security applies."""
    found = []
    with connection.schema_owner(), connection.cursor() as cursor:
        for table, column, data_type in text_columns():
            cast = "::text" if data_type in ("json", "jsonb") else ""
            for needle in needles:
                cursor.execute(
                    f'SELECT "{column}"{cast} FROM "{table}"'  # noqa: S608  (catalogue names)
                    f' WHERE "{column}"{cast} ILIKE %s',
                    [f"%{needle}%"],
                )
                found += [(table, column, row[0]) for row in cursor.fetchall()]
    return found


@pytest.fixture
def person(tenant):
    """Someone with a life in two tenants: a member of `tenant` who wrote there from a browser,
    was invited to a third, got notified, and whose roles the owner changed."""
    user = make_user(email=EMAIL, name=NAME)
    make_member(tenant, roles=("editor",), user=user)
    second = make_tenant(name="Second Place")
    make_member(second, roles=("viewer",), user=user)
    third = make_tenant(name="Third Place")
    client = client_for(user, tenant)
    created = client.post(
        f"{API}/products/",
        {"sku": "Z-1", "name": "Made by Zoë", "price": "1.00", "currency": "EUR"},
        format="json",
        HTTP_USER_AGENT="ZoeBrowser/1.0",
        REMOTE_ADDR="203.0.113.77",
    )
    assert created.status_code == 201, created.content
    owner = client_for(owner_of(tenant), tenant)
    members = owner.get(f"{API}/members/", {"page_size": 100}).json()["results"]
    membership = next(row for row in members if row["user"]["email"] == EMAIL)
    roles = {row["name"]: row["id"] for row in owner.get(f"{API}/roles/").json()["results"]}
    changed = owner.patch(
        f"{API}/members/{membership['id']}/", {"roles": [roles["viewer"]]}, format="json"
    )
    assert changed.status_code == 200, changed.content
    third_owner = client_for(owner_of(third), third)
    third_roles = {
        row["name"]: row["id"] for row in third_owner.get(f"{API}/roles/").json()["results"]
    }
    invited = third_owner.post(
        f"{API}/invitations/", {"email": EMAIL, "roles": [third_roles["viewer"]]}, format="json"
    )
    assert invited.status_code == 201, invited.content
    with tenant_context(tenant.pk):
        Notification.objects.create(
            tenant=tenant, user=user, topic="catalog.product.created", data={"by": NAME}
        )
    return {
        "user": user,
        "client": client,
        "tenants": (tenant, second, third),
        "owner": owner,
    }


def erase(client: APIClient, django_capture_on_commit_callbacks, password=DEFAULT_PASSWORD):
    """Ask for the erasure and let its job run (inline, once the request has committed)."""
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        return client.delete(ME, {"password": password}, format="json")


def test_erasure_leaves_no_email_or_name_anywhere_and_the_logs_verify(
    person, django_capture_on_commit_callbacks
):
    user = person["user"]
    tenant, second, third = person["tenants"]
    assert rows_mentioning(EMAIL, NAME)  # the search finds them before

    response = erase(person["client"], django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "erasing"
    assert rows_mentioning(EMAIL, NAME, "ZoeBrowser", "203.0.113.77") == []
    with outcome():
        erased = User.objects.get(pk=user.pk)
    pseudonym = ErasedPerson(user_id=user.pk, email=EMAIL, name=NAME)
    assert erased.email == pseudonym.pseudonym_email
    assert erased.name == ""
    assert not erased.is_active
    assert not erased.has_usable_password()
    assert erased.erased_at is not None

    # Each log kept its events, the person in them a pseudonym, the same one in every tenant;
    # each chain verifies, and says it was re-chained and why.
    for each in (tenant, second, third):
        owner = person["owner"] if each == tenant else client_for(owner_of(each), each)
        verified = owner.get(f"{API}/audit-events/verify/").json()
        assert verified["valid"] is True, (each, verified)
        with tenant_context(each.pk):
            events = list(AuditEvent.objects.order_by("created_at", "id"))
        rechained = [event for event in events if event.action == "tenants.audit.rechained"]
        assert len(rechained) == 1
        assert rechained[0].changes["reason"] == [None, "erasure"]
        assert rechained[0].changes["head"][0] != rechained[0].changes["head"][1]
    with tenant_context(tenant.pk):
        made = AuditEvent.objects.get(action="catalog.product.created")
    assert made.actor_id == pseudonym.pseudonym_id
    assert made.actor_label == pseudonym.pseudonym
    assert made.ip is None
    assert made.user_agent == ""
    with tenant_context(second.pk):
        # There they only asked for their erasure; the rest was done to them.
        acted = AuditEvent.objects.filter(actor_id=pseudonym.pseudonym_id)
        assert set(acted.values_list("action", flat=True)) == {"accounts.user.erasure_requested"}
        assert AuditEvent.objects.filter(
            action="accounts.user.erased", target_id=str(pseudonym.pseudonym_id)
        ).exists()
    with operator_scope("test"):
        assert not PlatformAuditEvent.objects.filter(actor_id=user.pk).exists()

    # Nothing of them is left in the tenants; they cannot come back.
    members = person["owner"].get(f"{API}/members/").json()["results"]
    assert str(user.pk) not in {row["user"]["id"] for row in members}
    assert APIClient().post(
        TOKEN, {"email": EMAIL, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
    ).status_code in (400, 401)


def test_the_account_is_refused_at_once_even_before_the_job_runs(
    person, django_capture_on_commit_callbacks
):
    user, tenant = person["user"], person["tenants"][0]
    client = APIClient()
    tokens = sign_in(client, user, tenant)

    # The job is queued on the broker, where no worker takes it: only the first step happens.
    with sent_through_the_broker(), django_capture_on_commit_callbacks(execute=True):
        response = client.delete(ME, {"password": DEFAULT_PASSWORD}, format="json")
    assert response.status_code == 202, response.content

    assert_problem(client.get(ME), 401, "not-authenticated")
    refreshed = APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 401
    with outcome():
        assert User.objects.get(pk=user.pk).erased_at is None

    # The beat job picks up an erasure whose job was lost.
    with tasks_run_inline():
        assert user_erasure_sweep_task.delay().get() == 1
    with outcome():
        assert User.objects.get(pk=user.pk).erased_at is not None


def test_a_wrong_password_changes_nothing(person, django_capture_on_commit_callbacks):
    response = erase(person["client"], django_capture_on_commit_callbacks, password="wrong-one")

    assert_problem(response, 400, "validation-error")
    assert person["client"].get(ME).status_code == 200
    with outcome():
        user = User.objects.get(pk=person["user"].pk)
    assert user.is_active
    assert user.erasure_requested_at is None
    assert_problem(person["client"].delete(ME, {}, format="json"), 400, "validation-error")


def test_the_last_owner_cannot_erase_themselves(tenant, django_capture_on_commit_callbacks):
    owner = client_for(owner_of(tenant), tenant)

    body = assert_problem(erase(owner, django_capture_on_commit_callbacks), 409, "conflict")

    assert tenant.slug in body["detail"]
    assert owner.get(ME).status_code == 200
    # With a second owner, they can.
    make_member(tenant, roles=("owner",))
    assert erase(owner, django_capture_on_commit_callbacks).status_code == 202


def test_an_api_key_erases_nobody(tenant):
    owner = client_for(owner_of(tenant), tenant)
    key = owner.post(f"{API}/api-keys/", {"name": "k", "permissions": ["members.read"]}).json()
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key['key']}")

    assert_problem(machine.delete(ME, {"password": "x"}, format="json"), 403, "permission-denied")


def test_a_broken_chain_is_not_rechained_and_the_erasure_waits(
    person, django_capture_on_commit_callbacks
):
    tenant = person["tenants"][0]
    with tenant_context(tenant.pk):
        victim = AuditEvent.objects.filter(action="catalog.product.created").get()
    trigger = "tenants_auditevent_append_only"
    with connection.schema_owner(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE tenants_auditevent DISABLE TRIGGER {trigger}")
        cursor.execute(
            "UPDATE tenants_auditevent SET action = 'catalog.product.deleted' WHERE id = %s",
            [victim.pk],
        )
        cursor.execute(f"ALTER TABLE tenants_auditevent ENABLE TRIGGER {trigger}")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    with pytest.raises(audit_chain.ChainBroken):
        erase(person["client"], django_capture_on_commit_callbacks)

    # Deactivated, not erased: the operators are alerted by the chain's verification.
    with outcome():
        user = User.objects.get(pk=person["user"].pk)
    assert not user.is_active
    assert user.erased_at is None
    assert user.email == EMAIL
