"""OWASP API1:2023, broken object level authorization, beyond the URL's own id.

tests/kernel/test_isolation_matrix.py proves that every route taking an object id answers 404 to
another tenant. This module proves the same for ids that travel elsewhere: in query filters, in
request bodies (a product's category, a category's parent, a member's or an invitation's roles), in
an invitation token meant for someone else, and in another user's notifications inside one tenant.
Each foreign id is treated exactly as an id that does not exist, and nothing foreign is written.
"""

import pytest
from rest_framework.test import APIClient

from catalog.models import Category, Product
from kernel.tenancy.models import Membership
from tests.attacks.support import (
    ACCEPT,
    Tenancy,
    invite,
    make_notification,
    notification_row,
    role_id,
    tenancy,
)
from tests.catalog_helpers import (
    CATEGORIES,
    PRODUCTS,
    category_url,
    make_category,
    make_product,
    product_body,
    product_url,
)
from tests.factories import DEFAULT_PASSWORD, make_member, make_user
from tests.helpers import API, assert_problem, client_for, error_fields, outcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def attacker() -> Tenancy:
    return tenancy("Attacker")


def test_a_filter_on_another_tenants_category_finds_nothing(victim, attacker):
    # Given a category of the victim with a product in it
    category = make_category(victim.tenant)
    make_product(victim.tenant, category=category)

    # When the attacker filters their own products by the victim's category
    response = attacker.client.get(PRODUCTS, {"category": str(category.pk)})

    # Then it is an unknown category: an empty list, none of the victim's products
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_a_product_cannot_be_put_in_another_tenants_category(victim, attacker):
    category = make_category(victim.tenant)
    own = make_product(attacker.tenant)

    created = attacker.client.post(PRODUCTS, product_body(category=str(category.pk)), format="json")
    patched = attacker.client.patch(
        product_url(own.pk), {"category": str(category.pk)}, format="json"
    )

    assert error_fields(created) == {"category"}
    assert error_fields(patched) == {"category"}
    with outcome():
        assert not Product.objects.filter(category=category).exists()


def test_a_category_cannot_be_hung_below_another_tenants_category(victim, attacker):
    parent = make_category(victim.tenant)
    own = make_category(attacker.tenant)

    created = attacker.client.post(
        CATEGORIES, {"name": "Child", "parent": str(parent.pk)}, format="json"
    )
    moved = attacker.client.patch(category_url(own.pk), {"parent": str(parent.pk)}, format="json")

    assert error_fields(created) == {"parent"}
    assert error_fields(moved) == {"parent"}
    with outcome():
        assert not Category.objects.filter(parent=parent).exists()


def test_another_tenants_roles_cannot_be_given_to_members_or_invitations(victim, attacker):
    # Given a member of the attacker's tenant, and the victim's owner role
    member = make_member(attacker.tenant)
    foreign_role = role_id(victim.tenant, "owner")

    patched = attacker.client.patch(
        f"{API}/members/{member.pk}/", {"roles": [foreign_role]}, format="json"
    )
    invited = attacker.client.post(
        f"{API}/invitations/",
        {"email": "friend@example.com", "roles": [foreign_role]},
        format="json",
    )

    assert error_fields(patched) == {"roles"}
    assert error_fields(invited) == {"roles"}


def test_an_invitation_for_someone_else_cannot_be_accepted_with_ones_own_password(
    victim, django_capture_on_commit_callbacks
):
    # Given an invitation to the victim's tenant for an existing person, and an attacker who has
    # come by its token and has an account of their own
    invitee = make_user(email="invitee@example.com", password="the invitee's own password 1")
    make_user(email="attacker@example.com")
    token = invite(
        victim.client,
        victim.tenant,
        "invitee@example.com",
        capture=django_capture_on_commit_callbacks,
    )

    # When the attacker accepts it with their password, or names their own address
    with_own_password = APIClient().post(
        ACCEPT, {"token": token, "password": DEFAULT_PASSWORD}, format="json"
    )
    with_own_email = APIClient().post(
        ACCEPT,
        {"token": token, "password": DEFAULT_PASSWORD, "email": "attacker@example.com"},
        format="json",
    )

    # Then the token joins nobody: only the invitee's password would do
    assert_problem(with_own_password, 401)
    assert_problem(with_own_email, 401)
    with outcome():
        emails = set(
            Membership.objects.filter(tenant=victim.tenant).values_list("user__email", flat=True)
        )
    assert emails == {victim.owner.email}
    assert invitee.email not in emails


def test_another_users_notifications_are_not_theirs_to_read(victim):
    # Given two members of one tenant, and a notification of the first
    colleague = make_member(victim.tenant, roles=("viewer",)).user
    theirs = make_notification(victim.tenant, victim.owner)
    client = client_for(colleague, victim.tenant)

    # When the colleague lists, counts, marks it read, and marks all read
    listed = client.get(f"{API}/notifications/")
    count = client.get(f"{API}/notifications/unread-count/")
    read = client.post(f"{API}/notifications/{theirs.id}/read/")
    read_all = client.post(f"{API}/notifications/read-all/")

    # Then they see none of it, and the owner's notification stays unread
    assert listed.json()["results"] == []
    assert count.json() == {"count": 0}
    assert_problem(read, 404, "not-found")
    assert read_all.json() == {"updated": 0}
    assert notification_row(theirs).read_at is None
