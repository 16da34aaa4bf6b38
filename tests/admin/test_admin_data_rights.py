"""A person's data rights answered by an operator in the admin: the user admin's actions erase the
selected people or export their data, each after a confirmation page, each recorded in the
platform's audit log; the job admin shows the export's download link."""

import io
import json
import re
import tarfile

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from kernel.context import operator_scope
from kernel.erasure import PSEUDONYM_DOMAIN, ErasedPerson
from kernel.models import Job
from kernel.tenancy.models import AuditEvent, PlatformAuditEvent
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant, make_user
from tests.helpers import client_for, outcome, owner_of, tasks_run_inline

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Rights Home", plan_code="pro")]

USERS = "/admin/accounts/user/"
JOBS_ADMIN = "/admin/core/job/"
User = get_user_model()


@pytest.fixture(autouse=True)
def export_storage(settings, tmp_path):
    """Archives in a directory of the test's own, through the same storage API as production."""
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "exports")},
        },
    }


@pytest.fixture
def person(tenant):
    """A member of `tenant` (the tenant they joined first) and of a second one."""
    user = make_user(email="rita.rights@people.example", name="Rita Rights")
    make_member(tenant, roles=("editor",), user=user)
    make_member(make_tenant(name="Later Place"), roles=("viewer",), user=user)
    return user


def run_action(client: Client, action: str, users, django_capture_on_commit_callbacks):
    """The action's confirmation page, then its confirmation, with the jobs it queues run
    inline once the request has committed; the page and the changelist after."""
    selected = [str(user.pk) for user in users]
    page = client.post(USERS, {"action": action, "_selected_action": selected})
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(
            USERS, {"action": action, "_selected_action": selected, "post": "yes"}, follow=True
        )
    return page, confirmed


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def platform_events(action: str, **filters):
    with operator_scope("test: reading the platform log"):
        return list(PlatformAuditEvent.objects.filter(action=action, **filters))


def test_an_operator_erases_a_person_after_confirming(
    operator_client, operator, person, tenant, django_capture_on_commit_callbacks
):
    person_id = person.pk
    page, confirmed = run_action(
        operator_client, "erase_people", [person], django_capture_on_commit_callbacks
    )

    # The confirmation lists the person and erases nothing yet.
    assert page.status_code == 200
    text = page.content.decode()
    assert "Erase the selected people" in text
    assert "rita.rights@people.example" in text
    assert 'name="post" value="yes"' in text

    # Confirmed: deactivated at once, then erased by the job.
    assert confirmed.status_code == 200
    (message,) = messages_of(confirmed)
    assert "Deactivated now, and erased by a job" in message
    assert "rita.rights@people.example" in message
    user = User.objects.get(pk=person_id)
    assert not user.is_active
    assert user.erasure_requested_at is not None
    assert user.erased_at is not None
    pseudonym = ErasedPerson(user_id=person_id, email="", name="")
    assert user.email == pseudonym.pseudonym_email
    assert user.email.endswith(f"@{PSEUDONYM_DOMAIN}")
    assert user.name == ""

    # In the platform log by the operator (the person named by their pseudonym once erased),
    # and in the tenants' logs.
    (event,) = platform_events("accounts.user.erasure_requested")
    assert event.actor_type == "operator"
    assert event.actor_id == operator.pk
    assert event.target_id == str(pseudonym.pseudonym_id)
    with outcome():
        assert AuditEvent.objects.filter(
            tenant=tenant, action="accounts.user.erasure_requested", actor_id=operator.pk
        ).exists()


def test_the_last_owner_of_a_tenant_is_not_erased(
    operator_client, tenant, django_capture_on_commit_callbacks
):
    owner = owner_of(tenant)
    _, confirmed = run_action(
        operator_client, "erase_people", [owner], django_capture_on_commit_callbacks
    )

    (message,) = messages_of(confirmed)
    assert message.startswith(f"{owner.email}: The person is the last owner of {tenant.slug}")
    refreshed = User.objects.get(pk=owner.pk)
    assert refreshed.is_active
    assert refreshed.erasure_requested_at is None
    assert platform_events("accounts.user.erasure_requested") == []


def test_staff_and_the_operator_themselves_are_not_erased_here(
    operator_client, operator, django_capture_on_commit_callbacks
):
    colleague = make_user(email="colleague@ops.example", is_staff=True)
    _, confirmed = run_action(
        operator_client, "erase_people", [operator, colleague], django_capture_on_commit_callbacks
    )

    assert set(messages_of(confirmed)) == {
        "colleague@ops.example: a staff member is not erased here: take away their staff "
        "status first.",
        "ops@example.com: you cannot erase yourself here.",
    }
    assert User.objects.filter(pk__in=[operator.pk, colleague.pk], is_active=True).count() == 2


def archive_files(archive: bytes) -> dict[str, list[dict]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {
            member.name: [json.loads(line) for line in tar.extractfile(member).read().splitlines()]
            for member in tar.getmembers()
            if member.name.endswith(".ndjson")
        }


def test_an_operator_exports_a_persons_data_and_fetches_it_from_the_job_admin(
    operator_client, operator, person, tenant, django_capture_on_commit_callbacks
):
    page, confirmed = run_action(
        operator_client, "export_people_data", [person], django_capture_on_commit_callbacks
    )

    assert page.status_code == 200
    assert "Export the selected people&#x27;s data" in page.content.decode()
    assert "rita.rights@people.example" in page.content.decode()

    # The job, in the tenant the person joined first, is theirs; it has succeeded.
    with operator_scope("test: reading the job"):
        (job,) = Job.objects.filter(kind="personal_export")
    assert job.tenant_id == tenant.pk
    assert job.created_by_user_id == person.pk
    assert job.status == Job.Status.SUCCEEDED
    (message,) = messages_of(confirmed)
    assert f'href="{JOBS_ADMIN}{job.pk}/change/"' in message

    # Recorded in the platform log by the operator, naming the job; and in the tenant's log.
    (event,) = platform_events("accounts.user.data_exported", target_id=str(person.pk))
    assert event.actor_type == "operator"
    assert event.actor_id == operator.pk
    assert event.changes["job"] == [None, str(job.pk)]
    with outcome():
        assert AuditEvent.objects.filter(
            tenant=tenant, action="tenants.member.data_exported", actor_id=operator.pk
        ).exists()

    # The job admin shows the link, which downloads the archive with no credential at all.
    listing = operator_client.get(JOBS_ADMIN)
    assert listing.status_code == 200
    assert "personal_export" in listing.content.decode()
    detail = operator_client.get(f"{JOBS_ADMIN}{job.pk}/change/")
    assert detail.status_code == 200
    (url,) = re.findall(
        r'href="(http://testserver/api/v1/exports/[^"]+/)"', detail.content.decode()
    )
    download = Client().get(url)
    assert download.status_code == 200
    assert download["Content-Type"] == "application/gzip"
    files = archive_files(b"".join(download.streaming_content))
    (account,) = files["account.ndjson"]
    assert account["email"] == "rita.rights@people.example"

    # It is the person's too, through the API.
    jobs = client_for(person, tenant).get("/api/v1/jobs/").json()["results"]
    assert [row["id"] for row in jobs] == [str(job.pk)]


def test_a_person_in_no_tenant_has_nothing_exported(
    operator_client, django_capture_on_commit_callbacks
):
    loner = make_user(email="loner@people.example")
    _, confirmed = run_action(
        operator_client, "export_people_data", [loner], django_capture_on_commit_callbacks
    )

    (message,) = messages_of(confirmed)
    assert message.startswith("loner@people.example: The person belongs to no tenant")
    with operator_scope("test: reading the jobs"):
        assert not Job.objects.exists()
    assert platform_events("accounts.user.data_exported") == []


def test_the_job_admin_is_read_only(operator_client, person, django_capture_on_commit_callbacks):
    run_action(operator_client, "export_people_data", [person], django_capture_on_commit_callbacks)
    with operator_scope("test: reading the job"):
        job = Job.objects.get()

    assert operator_client.get(f"{JOBS_ADMIN}add/").status_code == 403
    assert (
        operator_client.post(f"{JOBS_ADMIN}{job.pk}/change/", {"status": "failed"}).status_code
        == 403
    )
    assert operator_client.post(f"{JOBS_ADMIN}{job.pk}/delete/", {"post": "yes"}).status_code == 403
    with operator_scope("test: reading the job"):
        assert Job.objects.get().status == Job.Status.SUCCEEDED


def staff_client(email: str, *codenames: str) -> Client:
    """A staff member (not a superuser) holding the user permissions named, signed in."""
    staff = make_user(email=email, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    assert client.login(email=email, password=DEFAULT_PASSWORD)
    return client


def test_staff_who_may_only_view_users_run_neither_action(
    person, django_capture_on_commit_callbacks
):
    client = staff_client("helpdesk@ops.example", "view_user")

    changelist = client.get(USERS)
    assert changelist.status_code == 200
    assert "erase_people" not in changelist.content.decode()
    assert "export_people_data" not in changelist.content.decode()
    for action in ("erase_people", "export_people_data"):
        page, confirmed = run_action(client, action, [person], django_capture_on_commit_callbacks)
        # No confirmation page: the changelist again, and nothing done.
        assert 'name="post" value="yes"' not in page.content.decode()
        assert confirmed.status_code == 200

    refreshed = User.objects.get(pk=person.pk)
    assert refreshed.is_active
    assert refreshed.erasure_requested_at is None
    with operator_scope("test: reading the jobs"):
        assert not Job.objects.exists()
    assert platform_events("accounts.user.erasure_requested") == []
    assert platform_events("accounts.user.data_exported") == []


def test_erasing_takes_the_permission_to_delete_users_exporting_to_change_them(
    person, django_capture_on_commit_callbacks
):
    client = staff_client("support@ops.example", "view_user", "change_user")

    changelist = client.get(USERS).content.decode()
    assert "erase_people" not in changelist
    assert "export_people_data" in changelist
    page, confirmed = run_action(
        client, "erase_people", [person], django_capture_on_commit_callbacks
    )
    assert 'name="post" value="yes"' not in page.content.decode()
    assert set(messages_of(confirmed)) == {"No action selected."}
    assert User.objects.get(pk=person.pk).is_active

    run_action(client, "export_people_data", [person], django_capture_on_commit_callbacks)
    with operator_scope("test: reading the jobs"):
        assert Job.objects.get().status == Job.Status.SUCCEEDED
