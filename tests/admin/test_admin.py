"""The operators' Django admin: staff only, every tenant visible, suspension that bites."""

import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from kernel.tenancy.models import Invitation, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_role, make_tenant, make_user
from tests.helpers import API, ME, assert_problem, client_for, outcome, owner_of

pytestmark = pytest.mark.django_db

ADMIN = "/admin/"


@pytest.fixture
def two_tenants():
    return make_tenant(name="Alpha Shop"), make_tenant(name="Beta Works")


def test_an_operator_sees_every_tenant(operator_client, two_tenants):
    response = operator_client.get(f"{ADMIN}tenants/tenant/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Alpha Shop" in page
    assert "Beta Works" in page


def test_an_operator_sees_every_tenants_rows(operator_client, two_tenants):
    # Tenant-owned tables: readable only because each admin view runs in operator scope.
    alpha, beta = two_tenants
    make_member(alpha, email="alpha-member@example.com")
    make_member(beta, email="beta-member@example.com")
    make_role(beta, name="beta auditors")

    memberships = operator_client.get(f"{ADMIN}tenants/membership/").content.decode()
    roles = operator_client.get(f"{ADMIN}tenants/role/?tenant__id__exact={beta.id}")
    tenant_page = operator_client.get(f"{ADMIN}tenants/tenant/{beta.id}/change/")

    assert "alpha-member@example.com" in memberships
    assert "beta-member@example.com" in memberships
    assert roles.status_code == 200
    assert "beta auditors" in roles.content.decode()
    # The memberships inline of a tenant
    assert tenant_page.status_code == 200
    assert "beta-member@example.com" in tenant_page.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tenants/plan/",
        "tenants/invitation/",
        "tenants/role/",
        "accounts/user/",
        "accounts/user/add/",
    ],
)
def test_every_admin_page_renders(operator_client, two_tenants, path):
    assert operator_client.get(f"{ADMIN}{path}").status_code == 200


def test_invitations_are_read_only_in_the_admin(operator_client, two_tenants):
    alpha, _ = two_tenants
    admin_client = client_for(make_member(alpha, roles=["admin"]).user, alpha)
    invitees = make_role(alpha, name="invitees")
    created = admin_client.post(
        f"{API}/invitations/",
        {"email": "invited@example.com", "roles": [str(invitees.pk)]},
        format="json",
    )
    assert created.status_code == 201, created.content
    invitation_id = created.json()["id"]

    page = operator_client.get(f"{ADMIN}tenants/invitation/{invitation_id}/change/")
    add = operator_client.get(f"{ADMIN}tenants/invitation/add/")
    delete = operator_client.post(
        f"{ADMIN}tenants/invitation/{invitation_id}/delete/", {"post": "yes"}
    )

    assert page.status_code == 200
    assert "invited@example.com" in page.content.decode()
    assert add.status_code == 403
    assert delete.status_code == 403
    with outcome():
        assert Invitation.objects.filter(pk=invitation_id).exists()


def test_suspending_a_tenant_refuses_its_tokens(
    operator_client, two_tenants, django_capture_on_commit_callbacks
):
    # Given a member of Alpha signed in, with the principal cached by a first request
    alpha, beta = two_tenants
    member = client_for(owner_of(alpha), alpha)
    assert member.get(ME).status_code == 200
    beta_member = client_for(owner_of(beta), beta)

    # When an operator runs the Suspend action on Alpha
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            f"{ADMIN}tenants/tenant/",
            {"action": "suspend", "_selected_action": [str(alpha.id)]},
        )

    # Then Alpha is suspended and its token gets 403 tenant-suspended; Beta is untouched
    assert response.status_code == 302
    with outcome():
        assert Tenant.objects.get(pk=alpha.pk).status == Tenant.Status.SUSPENDED
    assert_problem(member.get(ME), 403, "tenant-suspended")
    assert beta_member.get(ME).status_code == 200

    # And Reactivate lets it back in
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(
            f"{ADMIN}tenants/tenant/",
            {"action": "reactivate", "_selected_action": [str(alpha.id)]},
        )
    assert member.get(ME).status_code == 200


def test_an_operator_creates_a_user_without_a_username(operator_client):
    response = operator_client.post(
        f"{ADMIN}accounts/user/add/",
        {
            "email": "Someone@Example.com",
            "name": "Someone",
            "usable_password": "true",
            "password1": "an admin chosen secret 1",
            "password2": "an admin chosen secret 1",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    user = get_user_model().objects.get(email="someone@example.com")
    assert user.check_password("an admin chosen secret 1")
    assert not user.is_staff


def test_a_member_who_is_not_staff_cannot_reach_the_admin(two_tenants):
    alpha, _ = two_tenants
    client = Client()
    assert client.login(email=owner_of(alpha).email, password=DEFAULT_PASSWORD)

    for path in ("", "tenants/tenant/", "tenants/membership/"):
        response = client.get(f"{ADMIN}{path}")
        assert response.status_code == 302
        assert response["Location"].startswith(f"{ADMIN}login/")


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, two_tenants):
    response = client.get(f"{ADMIN}tenants/tenant/")

    assert response.status_code == 302
    assert response["Location"].startswith(f"{ADMIN}login/")
    assert "Alpha Shop" not in response.content.decode()


def test_suspending_in_the_change_form_refuses_the_tenants_tokens(
    operator_client, two_tenants, django_capture_on_commit_callbacks
):
    # Given a signed-in member of Alpha, and Alpha's change form as the operator sees it
    alpha, _ = two_tenants
    make_member(alpha)
    member = client_for(owner_of(alpha), alpha)
    assert member.get(ME).status_code == 200
    url = f"{ADMIN}tenants/tenant/{alpha.id}/change/"
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', (
        operator_client.get(url).content.decode()
    )))  # fmt: skip

    # When the operator saves it with the status set to suspended
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            url,
            {
                **form,
                "name": alpha.name,
                "slug": alpha.slug,
                "status": "suspended",
                "plan": str(alpha.plan_id),
                "settings": "{}",
            },
        )

    # Then the tenant is suspended and its token refused at once
    assert response.status_code == 302, response.content.decode()[:3000]
    with outcome():
        assert Tenant.objects.get(pk=alpha.pk).status == Tenant.Status.SUSPENDED
    assert_problem(member.get(ME), 403, "tenant-suspended")


def test_operators_passwords_cannot_be_guessed_at_the_admins_sign_in(settings):
    # A finding of the source review: 60 wrong passwords for a staff account all got 200.
    settings.LOGIN_FAILURE_LIMIT = 3
    email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    make_user(email=email, is_staff=True, is_superuser=True)
    attacker = Client(REMOTE_ADDR="10.250.0.1")

    guesses = [
        attacker.post("/admin/login/", {"username": email, "password": f"guess {n}"})
        for n in range(3)
    ]
    right = attacker.post("/admin/login/", {"username": email, "password": DEFAULT_PASSWORD})

    # Then each guess was refused, and after them the right password too, for the lockout
    assert [r.status_code for r in guesses] == [200, 200, 200]
    assert right.status_code == 429
    assert right["Content-Type"] == "application/problem+json"
    assert int(right["Retry-After"]) >= 1
    # while the operator signs in from their own address
    own = Client(REMOTE_ADDR="10.250.0.2")
    signed_in = own.post("/admin/login/", {"username": email, "password": DEFAULT_PASSWORD})
    assert signed_in.status_code == 302


def test_view_site_leads_to_the_api_documentation(operator_client):
    # A first-hour finding: "View site" led to `/`, a 404.
    page = operator_client.get("/admin/").content.decode()

    assert 'href="/api/v1/docs/"' in page
    assert operator_client.get("/api/v1/docs/").status_code == 200
