"""OWASP API6:2023, unrestricted access to sensitive business flows.

The flows that hand out access are held to their rules whatever a client sends: an invitation
token joins one person once, not after it expired or was revoked, and only with the roles it
was sent with (an accept body cannot add any, and nobody can invite with more than they hold or
as an owner unless they are one); signing up, which creates a tenant, is limited per address,
and a refused signup creates nothing.

The source review's cases of this category (docs/security.md): invitations as an unlimited
phishing channel, past the member quota, with the tenant's words in our Subject (finding 2,
tests/accounts/test_invitations.py); signup telling which emails have accounts, unlimited per email
(12, tests/accounts/test_login_limits.py).
"""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from kernel.permissions import Perm
from kernel.tenancy.models import Invitation, Membership, Tenant
from tests.attacks.support import ACCEPT, INVITATIONS, Tenancy, invite, role_id, tenancy
from tests.factories import DEFAULT_PASSWORD, make_member, make_role
from tests.helpers import API, assert_problem, client_for, error_fields, outcome

pytestmark = pytest.mark.django_db

SIGNUP = f"{API}/auth/signup/"


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Flows")


def accept(token: str, **extra):
    body = {"token": token, "password": DEFAULT_PASSWORD, **extra}
    return APIClient().post(ACCEPT, body, format="json")


def roles_of(tenant, email: str) -> set[str]:
    with outcome():
        membership = Membership.objects.get(tenant=tenant, user__email=email)
        return set(membership.roles.values_list("name", flat=True))


def test_an_invitation_is_accepted_once(own, django_capture_on_commit_callbacks):
    token = invite(
        own.client, own.tenant, "once@example.com", capture=django_capture_on_commit_callbacks
    )

    first = accept(token)
    second = accept(token)

    assert first.status_code == 200, first.content
    assert error_fields(second) == {"token"}


@pytest.mark.parametrize("spoil", ["expired", "revoked"])
def test_a_spoiled_invitation_is_refused_like_an_unknown_one(
    own, django_capture_on_commit_callbacks, spoil
):
    token = invite(
        own.client, own.tenant, "late@example.com", capture=django_capture_on_commit_callbacks
    )
    column = {"expired": "expires_at", "revoked": "revoked_at"}[spoil]
    with outcome():
        Invitation.objects.filter(tenant=own.tenant).update(**{column: timezone.now()})

    spoiled = accept(token)
    unknown = accept("x" * len(token))

    assert error_fields(spoiled) == {"token"}
    assert spoiled.json()["errors"] == unknown.json()["errors"]
    with outcome():
        assert not Membership.objects.filter(tenant=own.tenant, user__email="late@example.com")


def test_accepting_cannot_add_roles(own, django_capture_on_commit_callbacks):
    token = invite(
        own.client, own.tenant, "climber@example.com", capture=django_capture_on_commit_callbacks
    )

    response = accept(
        token,
        roles=[role_id(own.tenant, "owner")],
        role="owner",
        is_staff=True,
        tenant=str(own.tenant.id),
    )

    assert response.status_code == 200, response.content
    assert roles_of(own.tenant, "climber@example.com") == {"viewer"}
    assert not get_user_model().objects.get(email="climber@example.com").is_staff


def test_nobody_invites_with_more_than_they_hold(own):
    # Given a member who may invite but holds nothing else, and an admin (not an owner)
    recruiter_role = make_role(own.tenant, permissions=[Perm.MEMBERS_MANAGE, Perm.MEMBERS_READ])
    recruiter = client_for(make_member(own.tenant, roles=(recruiter_role.name,)).user, own.tenant)
    admin = client_for(make_member(own.tenant, roles=("admin",)).user, own.tenant)

    as_admin = recruiter.post(
        INVITATIONS, {"email": "a@example.com", "roles": [role_id(own.tenant, "admin")]}
    )
    as_owner = admin.post(
        INVITATIONS, {"email": "o@example.com", "roles": [role_id(own.tenant, "owner")]}
    )

    assert_problem(as_admin, 403, "permission-denied")
    assert_problem(as_owner, 403, "permission-denied")
    with outcome():
        assert not Invitation.objects.filter(tenant=own.tenant).exists()


def test_signups_from_one_address_are_limited_and_a_refused_one_creates_nothing(settings):
    settings.RATELIMIT_SIGNUP_RATE = (2, 3600)
    address = f"10.66.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"

    def signup(n: int):
        body = {
            "email": f"bulk-{n}-{uuid.uuid4().hex[:8]}@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant_name": f"Bulk {uuid.uuid4().hex[:8]}",
        }
        return body, APIClient().post(SIGNUP, body, format="json", REMOTE_ADDR=address)

    attempts = [signup(n) for n in range(3)]

    assert [response.status_code for _, response in attempts] == [201, 201, 429]
    refused_body, refused = attempts[2]
    assert int(refused["Retry-After"]) >= 1
    assert not get_user_model().objects.filter(email=refused_body["email"]).exists()
    assert not Tenant.objects.filter(name=refused_body["tenant_name"]).exists()
