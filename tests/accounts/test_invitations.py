"""Invitations: sent by members.manage holders, accepted once with the emailed token."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from kernel.permissions import Perm
from kernel.tenancy.models import Invitation, Membership, Plan, Role, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_role, make_tenant, make_user
from tests.helpers import (
    API,
    ME,
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    outcome,
    owner_of,
    tasks_run_inline,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme")]

INVITATIONS = f"{API}/invitations/"
ACCEPT = f"{API}/invitations/accept/"
NEW_PASSWORD = "a brand new passphrase 77"


def invitation_url(invitation_id) -> str:
    return f"{INVITATIONS}{invitation_id}/"


def role_id(tenant, name: str) -> str:
    with outcome():
        return str(Role.objects.get(tenant=tenant, name=name).pk)


def invitation_of(invitation_id) -> Invitation:
    with outcome():
        return Invitation.objects.get(pk=invitation_id)


def member_emails(tenant) -> set[str]:
    with outcome():
        return set(Membership.objects.filter(tenant=tenant).values_list("user__email", flat=True))


def token_in(message) -> str:
    return re.search(r"token=([A-Za-z0-9_-]+)", message.body).group(1)


@pytest.fixture
def invite(admin_client, tenant, django_capture_on_commit_callbacks):
    """Invite an address as the admin; returns (invitation id, the emailed token)."""

    def invite(email: str = "new@example.com", roles=("editor",)) -> tuple[str, str]:
        mail.outbox.clear()
        with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                INVITATIONS,
                {"email": email, "roles": [role_id(tenant, name) for name in roles]},
                format="json",
            )
        assert response.status_code == 201, response.content
        (message,) = mail.outbox
        return response.json()["id"], token_in(message)

    return invite


# --- who may -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", INVITATIONS),
        ("post", INVITATIONS),
        ("get", invitation_url("00000000-0000-0000-0000-000000000001")),
        ("delete", invitation_url("00000000-0000-0000-0000-000000000001")),
    ],
)
def test_invitations_need_a_credential(api_client, method, url):
    response = getattr(api_client, method)(url, {}, format="json")

    assert_problem(response, 401, "not-authenticated")


@pytest.mark.parametrize("role_name", ["editor", "viewer"])
def test_members_without_members_manage_cannot_invite_or_revoke(tenant, invite, role_name):
    invitation_id, _ = invite()
    client = client_for(make_member(tenant, roles=[role_name]).user, tenant)

    create = client.post(
        INVITATIONS, {"email": "x@example.com", "roles": [role_id(tenant, "viewer")]}
    )
    revoke = client.delete(invitation_url(invitation_id))

    assert_problem(create, 403, "permission-denied")
    assert_problem(revoke, 403, "permission-denied")
    assert invitation_of(invitation_id).revoked_at is None
    with outcome():
        assert not Invitation.objects.filter(tenant=tenant, email="x@example.com").exists()


def test_members_read_holders_list_and_read_invitations(tenant, invite):
    invitation_id, _ = invite("listed@example.com")
    client = client_for(make_member(tenant, roles=["viewer"]).user, tenant)

    listed = client.get(INVITATIONS)
    detail = client.get(invitation_url(invitation_id))

    assert listed.status_code == 200, listed.content
    assert [i["email"] for i in listed.json()["results"]] == ["listed@example.com"]
    assert detail.status_code == 200
    assert set(detail.json()) == {
        "id",
        "email",
        "roles",
        "status",
        "invited_by",
        "expires_at",
        "accepted_at",
        "revoked_at",
        "created_at",
    }


# --- creating ---------------------------------------------------------------------------------


def test_an_invitation_is_created_and_its_token_emailed_once_after_commit(
    tenant, admin_client, settings, django_capture_on_commit_callbacks
):
    settings.INVITATION_ACCEPT_URL = "https://app.example/join?token={token}"
    before = timezone.now()

    # When an admin invites an address, with the email task run inline once the request commits
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            INVITATIONS,
            {"email": "New.Person@Example.com", "roles": [role_id(tenant, "editor")]},
            format="json",
        )
        # Nothing is sent before the commit
        assert mail.outbox == []

    # Then the invitation is there, for 7 days, pending, without its token
    assert response.status_code == 201, response.content
    assert len(callbacks) >= 1
    body = response.json()
    assert response["Location"].endswith(invitation_url(body["id"]))
    assert body["email"] == "new.person@example.com"
    assert body["status"] == "pending"
    assert [role["name"] for role in body["roles"]] == ["editor"]
    assert "token" not in body
    assert "token_hash" not in body
    invitation = invitation_of(body["id"])
    assert timedelta(days=7) <= invitation.expires_at - before < timedelta(days=7, minutes=1)

    # ... and one email carries the token, once; the database keeps only its SHA-256
    (message,) = mail.outbox
    assert message.to == ["new.person@example.com"]
    token = token_in(message)
    assert message.body.count(token) == 1
    assert "https://app.example/join?token=" in message.body
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in response.content.decode()


def test_the_invitation_lifetime_is_a_setting(tenant, admin_client, settings):
    settings.INVITATION_TTL_DAYS = 2

    response = admin_client.post(
        INVITATIONS, {"email": "soon@example.com", "roles": [role_id(tenant, "viewer")]}
    )

    lifetime = invitation_of(response.json()["id"]).expires_at - timezone.now()
    assert timedelta(days=1, hours=23) < lifetime <= timedelta(days=2)


def test_mass_assignment_on_create_is_ignored(tenant, admin_client):
    other = make_tenant()

    response = admin_client.post(
        INVITATIONS,
        {
            "email": "plain@example.com",
            "roles": [role_id(tenant, "viewer")],
            "id": "00000000-0000-0000-0000-000000000001",
            "tenant": str(other.id),
            "tenant_id": str(other.id),
            "accepted_at": "2020-01-01T00:00:00Z",
            "expires_at": "2100-01-01T00:00:00Z",
            "token_hash": "0" * 64,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    invitation = invitation_of(response.json()["id"])
    assert str(invitation.pk) != "00000000-0000-0000-0000-000000000001"
    assert invitation.tenant_id == tenant.id
    assert invitation.accepted_at is None
    assert invitation.expires_at.year < 2100
    assert invitation.token_hash != "0" * 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "roles": ["viewer"]}, "email"),
        ({"email": "a@example.com", "roles": []}, "roles"),
        ({"email": "a@example.com", "roles": ["00000000-0000-0000-0000-000000000001"]}, "roles"),
    ],
)
def test_bad_input_is_a_field_error(tenant, admin_client, body, field):
    body = {**body, "roles": [role_id(tenant, r) if r == "viewer" else r for r in body["roles"]]}

    response = admin_client.post(INVITATIONS, body, format="json")

    assert field in error_fields(response)


def test_another_tenants_role_cannot_be_offered(tenant, admin_client):
    foreign = role_id(make_tenant(), "viewer")
    response = admin_client.post(INVITATIONS, {"email": "a@example.com", "roles": [foreign]})

    assert error_fields(response) == {"roles"}
    # In the words every field of an id uses (a foreign category says the same)
    (error,) = response.json()["errors"]
    assert error["message"] == f'Role "{foreign}" does not exist.'


def test_inviting_a_member_is_a_conflict(tenant, admin_client):
    member = make_member(tenant, email="already@example.com")

    response = admin_client.post(
        INVITATIONS, {"email": "Already@Example.com", "roles": [role_id(tenant, "viewer")]}
    )

    assert_problem(response, 409, "conflict")
    assert member.user.email in member_emails(tenant)


def test_a_second_pending_invitation_for_an_address_is_a_conflict(tenant, invite, admin_client):
    first_id, _ = invite("twice@example.com")

    again = admin_client.post(
        INVITATIONS, {"email": "twice@example.com", "roles": [role_id(tenant, "viewer")]}
    )
    assert_problem(again, 409, "conflict")

    # Once the first is revoked, the address can be invited again.
    assert admin_client.delete(invitation_url(first_id)).status_code == 204
    invite("twice@example.com")


def test_an_expired_invitation_is_replaced_by_a_new_one(tenant, invite):
    first_id, _ = invite("late@example.com")
    with outcome():
        Invitation.objects.filter(pk=first_id).update(expires_at=timezone.now())

    second_id, _ = invite("late@example.com")

    assert second_id != first_id
    assert invitation_of(first_id).status == "revoked"
    assert invitation_of(second_id).status == "pending"


def test_an_invitation_cannot_offer_a_permission_the_inviter_lacks(tenant):
    manager = make_role(
        tenant, name="member manager", permissions=[Perm.MEMBERS_MANAGE, Perm.MEMBERS_READ]
    )
    client = client_for(make_member(tenant, roles=[manager.name]).user, tenant)

    response = client.post(
        INVITATIONS, {"email": "e@example.com", "roles": [role_id(tenant, "editor")]}
    )

    assert_problem(response, 403, "permission-denied")


def test_only_an_owner_invites_an_owner(tenant, admin_client):
    body = {"email": "boss@example.com", "roles": [role_id(tenant, "owner")]}

    by_admin = admin_client.post(INVITATIONS, body, format="json")
    by_owner = client_for(owner_of(tenant), tenant).post(INVITATIONS, body, format="json")

    assert_problem(by_admin, 403, "permission-denied")
    assert by_owner.status_code == 201, by_owner.content


def test_no_invitation_when_the_tenant_is_full(tenant, admin_client):
    with outcome():
        Plan.objects.filter(pk=tenant.plan_id).update(max_members=2)  # owner and admin

    response = admin_client.post(
        INVITATIONS, {"email": "extra@example.com", "roles": [role_id(tenant, "viewer")]}
    )

    assert_problem(response, 403, "quota-exceeded")


def test_pending_invitations_hold_seats_of_the_member_quota(tenant, admin_client):
    # A finding of the source review: 12 invitations went out on a plan of 5 members.
    with outcome():
        Plan.objects.filter(pk=tenant.plan_id).update(max_members=4)  # owner, admin and 2 more

    sent = [
        admin_client.post(
            INVITATIONS, {"email": f"seat{n}@example.com", "roles": [role_id(tenant, "viewer")]}
        )
        for n in range(3)
    ]

    assert [response.status_code for response in sent[:2]] == [201, 201]
    assert_problem(sent[2], 403, "quota-exceeded")
    # A revoked invitation frees its seat
    assert admin_client.delete(invitation_url(sent[0].json()["id"])).status_code == 204
    again = admin_client.post(
        INVITATIONS, {"email": "seat9@example.com", "roles": [role_id(tenant, "viewer")]}
    )
    assert again.status_code == 201, again.content


def test_invitations_a_day_are_capped_by_the_plan(tenant, admin_client):
    with outcome():
        Plan.objects.filter(pk=tenant.plan_id).update(max_members=1_000, max_invitations_per_day=3)

    statuses = []
    for n in range(3):
        created = admin_client.post(
            INVITATIONS, {"email": f"day{n}@example.com", "roles": [role_id(tenant, "viewer")]}
        )
        statuses.append(created.status_code)
        # Revoked ones still count: each sent an email
        admin_client.delete(invitation_url(created.json()["id"]))
    refused = admin_client.post(
        INVITATIONS, {"email": "day9@example.com", "roles": [role_id(tenant, "viewer")]}
    )

    assert statuses == [201, 201, 201]
    body = assert_problem(refused, 403, "quota-exceeded")
    assert (body["resource"], body["limit"]) == ("invitations_per_day", 3)
    # A day later there is room again
    with outcome():
        Invitation.objects.filter(tenant=tenant).update(
            created_at=timezone.now() - timedelta(days=1, minutes=1)
        )
    later = admin_client.post(
        INVITATIONS, {"email": "day9@example.com", "roles": [role_id(tenant, "viewer")]}
    )
    assert later.status_code == 201, later.content


PHISHING = "IT Security: your account is locked, verify at https://evil.example/login"


def test_names_a_tenant_chooses_stay_out_of_the_subject_and_are_quoted_in_the_body(
    tenant, admin_client, django_capture_on_commit_callbacks
):
    # A finding of the source review: the tenant's name made the Subject of our email.
    with outcome():
        Tenant.objects.filter(pk=tenant.pk).update(name=PHISHING + "\nReply now")
    with outcome():
        admin = Membership.objects.select_related("user").get(tenant=tenant, roles__name="admin")
        type(admin.user).objects.filter(pk=admin.user.pk).update(name="Your IT department")
    mail.outbox.clear()

    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        created = admin_client.post(
            INVITATIONS, {"email": "target@example.com", "roles": [role_id(tenant, "viewer")]}
        )
    assert created.status_code == 201, created.content

    (message,) = mail.outbox
    assert message.subject == "An invitation to join a team"
    assert "evil" not in message.subject
    # The names are there, as quoted data on lines of their own, never a sentence of ours
    assert f'Team name:  "{PHISHING}\\nReply now"' in message.body
    assert 'Invited by: "Your IT department"' in message.body
    assert "Reply now\n" not in message.body
    assert "invited you to join" not in message.body


# --- accepting ----------------------------------------------------------------------------


def test_a_new_person_accepts_creates_an_account_and_is_signed_in(tenant, invite):
    invitation_id, token = invite("fresh@example.com", roles=("editor", "viewer"))

    response = APIClient().post(
        ACCEPT, {"token": token, "password": NEW_PASSWORD, "name": "Fresh"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"]["email"] == "fresh@example.com"
    assert body["user"]["name"] == "Fresh"
    assert body["tenant"]["id"] == str(tenant.id)
    me = APIClient().get(ME, HTTP_AUTHORIZATION=f"Bearer {body['access']}").json()
    assert me["tenant"]["slug"] == tenant.slug
    assert me["roles"] == ["editor", "viewer"]
    assert invitation_of(invitation_id).status == "accepted"
    assert get_user_model().objects.get(email="fresh@example.com").check_password(NEW_PASSWORD)


def test_an_invitation_works_once(tenant, invite):
    _, token = invite("once@example.com")
    body = {"token": token, "password": NEW_PASSWORD}
    assert APIClient().post(ACCEPT, body, format="json").status_code == 200

    again = APIClient().post(ACCEPT, body, format="json")

    assert error_fields(again) == {"token"}


def test_a_person_with_an_account_accepts_with_its_password(tenant, invite):
    existing = make_user(email="known@example.com")
    make_tenant(owner=existing)
    _, token = invite("known@example.com")

    wrong = APIClient().post(ACCEPT, {"token": token, "password": "not it"}, format="json")
    missing = APIClient().post(ACCEPT, {"token": token}, format="json")
    right = APIClient().post(ACCEPT, {"token": token, "password": DEFAULT_PASSWORD}, format="json")

    assert_problem(wrong, 401, "not-authenticated")
    assert error_fields(missing) == {"password"}
    assert right.status_code == 200, right.content
    assert right.json()["user"]["id"] == str(existing.pk)
    assert "known@example.com" in member_emails(tenant)


def test_a_new_account_needs_a_valid_password(tenant, invite):
    invitation_id, token = invite("weak@example.com")

    missing = APIClient().post(ACCEPT, {"token": token}, format="json")
    weak = APIClient().post(ACCEPT, {"token": token, "password": "12345678"}, format="json")

    assert error_fields(missing) == {"password"}
    assert error_fields(weak) == {"password"}
    assert not get_user_model().objects.filter(email="weak@example.com").exists()
    assert invitation_of(invitation_id).status == "pending"


def test_expired_revoked_and_unknown_tokens_are_refused_alike(tenant, invite, admin_client):
    expired_id, expired = invite("expired@example.com")
    revoked_id, revoked = invite("revoked@example.com")
    with outcome():
        Invitation.objects.filter(pk=expired_id).update(expires_at=timezone.now())
    assert admin_client.delete(invitation_url(revoked_id)).status_code == 204

    bodies = []
    for token in (expired, revoked, "made-up-token"):
        response = APIClient().post(
            ACCEPT, {"token": token, "password": NEW_PASSWORD}, format="json"
        )
        assert error_fields(response) == {"token"}
        bodies.append(response.json()["errors"])

    assert bodies[0] == bodies[1] == bodies[2]
    assert member_emails(tenant).isdisjoint({"expired@example.com", "revoked@example.com"})


def test_accepting_beyond_the_plans_member_quota_is_refused(tenant, invite):
    # Given an invitation sent while there was room, and the tenant full since
    invitation_id, token = invite("late@example.com")
    with outcome():
        Plan.objects.filter(pk=tenant.plan_id).update(max_members=3)
    make_member(tenant)

    # When it is accepted
    response = APIClient().post(ACCEPT, {"token": token, "password": NEW_PASSWORD}, format="json")

    # Then it is refused, and nothing is created; the invitation stays usable
    assert_problem(response, 403, "quota-exceeded")
    assert "late@example.com" not in member_emails(tenant)
    assert not get_user_model().objects.filter(email="late@example.com").exists()
    assert invitation_of(invitation_id).status == "pending"


def test_accepting_into_a_suspended_tenant_is_refused(tenant, invite):
    _, token = invite("suspended@example.com")
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)

    response = APIClient().post(ACCEPT, {"token": token, "password": NEW_PASSWORD}, format="json")

    assert_problem(response, 403, "tenant-suspended")


def test_accepting_when_already_a_member_is_a_conflict(tenant, invite):
    _, token = invite("joined@example.com")
    make_member(tenant, email="joined@example.com")

    response = APIClient().post(
        ACCEPT, {"token": token, "password": DEFAULT_PASSWORD}, format="json"
    )

    assert_problem(response, 409, "conflict")


# --- revoking -------------------------------------------------------------------------------


def test_revoking_keeps_the_invitation_listed_as_revoked(tenant, invite, admin_client):
    invitation_id, _ = invite()

    response = admin_client.delete(invitation_url(invitation_id))

    assert response.status_code == 204
    detail = admin_client.get(invitation_url(invitation_id)).json()
    assert detail["status"] == "revoked"
    assert detail["revoked_at"] is not None


def test_an_accepted_invitation_cannot_be_revoked(tenant, invite, admin_client):
    invitation_id, token = invite()
    APIClient().post(ACCEPT, {"token": token, "password": NEW_PASSWORD}, format="json")

    assert_problem(admin_client.delete(invitation_url(invitation_id)), 409, "conflict")
    assert invitation_of(invitation_id).status == "accepted"


# --- another tenant's invitations -------------------------------------------------------------


def test_another_tenants_invitation_is_not_found(tenant, admin_client):
    other = make_tenant()
    other_admin = client_for(make_member(other, roles=["admin"]).user, other)
    theirs = other_admin.post(
        INVITATIONS, {"email": "theirs@example.com", "roles": [role_id(other, "viewer")]}
    ).json()["id"]

    assert_not_found_for_every_method(admin_client, invitation_url(theirs), {"delete": None})

    assert invitation_of(theirs).status == "pending"
    assert "theirs@example.com" not in {
        i["email"] for i in admin_client.get(INVITATIONS).json()["results"]
    }


# --- the link in the email ---------------------------------------------------------------------


def test_the_link_the_email_carries_opens_a_page_that_accepts(tenant, invite):
    # A first-hour finding: the email linked to a 404.
    invite("linked@example.com")
    (message,) = mail.outbox
    link = re.search(r"(https?://\S+/accept-invitation\?token=\S+)", message.body).group(1)
    path = link.split("//", 1)[1].split("/", 1)[1]
    browser = Client(enforce_csrf_checks=True)

    page = browser.get(f"/{path}")
    assert page.status_code == 200
    assert page["X-Frame-Options"] == "DENY"
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    token = re.search(r'name="token" value="([^"]+)"', page.content.decode()).group(1)
    accepted = browser.post(
        "/accept-invitation",
        {
            "csrfmiddlewaretoken": csrf.group(1),
            "token": token,
            "name": "Linked",
            "password": NEW_PASSWORD,
        },
    )

    assert accepted.status_code == 200, accepted.content.decode()[:500]
    assert "You joined the team" in accepted.content.decode()
    assert "linked@example.com" in member_emails(tenant)


def test_the_page_says_why_when_the_token_is_wrong(tenant):
    browser = Client()

    refused = browser.post("/accept-invitation", {"token": "nope", "password": NEW_PASSWORD})

    assert refused.status_code == 200  # the form again, saying why
    assert "The invitation is invalid, expired, revoked or already used." in (
        refused.content.decode()
    )
