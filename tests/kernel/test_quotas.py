"""Plan quotas: past the plan's number, a create is 403 quota-exceeded and creates nothing, even
when two requests race for the last slot."""

import contextlib
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from kernel.context import operator_scope, tenant_context
from kernel.problems import Problem
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import Invitation, InvitationRole, Membership, Plan, Role, Tenant
from kernel.tenancy.selectors import membership_count
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.helpers import API, assert_problem, client_for, outcome, owner_of

INVITATIONS = f"{API}/invitations/"
ACCEPT = f"{API}/invitations/accept/"


def tenant_with_room_for(members: int) -> Tenant:
    with outcome():
        plan = Plan.objects.create(
            code=f"quota-{uuid.uuid4().hex[:12]}", name="Quota", max_members=members
        )
    return make_tenant(plan_code=plan.code)


def pending_invitation(tenant: Tenant, email: str) -> str:
    """An invitation to `email` as a viewer, as the service stores one; returns its token."""
    token = uuid.uuid4().hex
    with operator_scope("test setup: an invitation"):
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email,
            token_hash=services.invitation_token_hash(token),
            expires_at=timezone.now() + timedelta(days=1),
        )
        InvitationRole.objects.create(
            tenant=tenant,
            invitation=invitation,
            role=Role.objects.get(tenant=tenant, name="viewer"),
        )
    return token


def viewer_role_id(client: APIClient) -> str:
    roles = client.get(f"{API}/roles/").json()["results"]
    return next(role["id"] for role in roles if role["name"] == "viewer")


def members_of(tenant: Tenant) -> int:
    with outcome():
        return Membership.objects.filter(tenant=tenant).count()


# --- at the limit ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_inviting_into_a_full_tenant_is_refused_and_creates_nothing():
    # Given a tenant whose plan allows 2 members, and has them
    tenant = tenant_with_room_for(2)
    make_member(tenant, roles=["viewer"])
    owner = client_for(owner_of(tenant), tenant)

    # When the owner invites a third
    body = {"email": "third@example.com", "roles": [viewer_role_id(owner)]}
    response = owner.post(INVITATIONS, body, format="json")

    # Then it is a 403 quota-exceeded that says the limit, and no invitation exists
    body = assert_problem(response, 403, "quota-exceeded")
    assert body["limit"] == 2
    assert body["resource"] == "members"
    with outcome():
        assert not Invitation.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_accepting_into_a_full_tenant_is_refused_and_creates_nothing():
    # Given an invitation, and a tenant that filled up since it was sent
    tenant = tenant_with_room_for(2)
    token = pending_invitation(tenant, "late@example.com")
    make_member(tenant, roles=["viewer"])

    # When it is accepted
    response = APIClient().post(
        ACCEPT, {"token": token, "password": DEFAULT_PASSWORD}, format="json"
    )

    # Then it is refused with the limit, and the tenant still has its 2 members
    assert assert_problem(response, 403, "quota-exceeded")["limit"] == 2
    assert members_of(tenant) == 2


@pytest.mark.django_db
def test_a_raised_quota_applies_at_once():
    # Given a full tenant, whose plan the operator then raises
    tenant = tenant_with_room_for(1)
    owner = client_for(owner_of(tenant), tenant)
    body = {"email": "next@example.com", "roles": [viewer_role_id(owner)]}
    assert_problem(owner.post(INVITATIONS, body, format="json"), 403, "quota-exceeded")
    with outcome():
        Plan.objects.filter(tenants=tenant).update(max_members=2)

    # When the owner invites again, then it is accepted
    assert owner.post(INVITATIONS, body, format="json").status_code == 201


@pytest.mark.django_db
def test_every_resource_reads_its_own_quota():
    tenant = make_tenant()
    plan = tenant.plan
    expected = {
        Resource.MEMBERS: plan.max_members,
        Resource.API_KEYS: plan.max_api_keys,
        Resource.PRODUCTS: plan.max_products,
    }
    for resource, limit in expected.items():
        with transaction.atomic(), tenant_context(tenant.id):
            assert enforce_quota(tenant=tenant, resource=resource, count=lambda: 0) == limit - 1
            with pytest.raises(Problem) as refused:
                enforce_quota(tenant=tenant, resource=resource.value, count=lambda n=limit: n)
        assert refused.value.extra == {"resource": resource.value, "limit": limit}


@pytest.mark.django_db(transaction=True)
def test_a_quota_outside_a_transaction_is_a_programming_error():
    tenant = make_tenant()

    with pytest.raises(RuntimeError, match="inside the transaction"):
        enforce_quota(tenant=tenant, resource=Resource.MEMBERS, count=lambda: 0)


# --- the last slot, raced for --------------------------------------------------------------


class Rendezvous:
    """Holds each caller of `count` until the other arrives, or `patience` seconds pass.

    If the tenant lock works, the second racer is blocked before it can count, so the first
    waits out its patience alone and commits, and the second then counts a full tenant. Without
    the lock both count the same free slot at the same moment, and both create.
    """

    def __init__(self, count, patience: float = 3.0) -> None:
        self.count = count
        self.barrier = threading.Barrier(2, timeout=patience)

    def __call__(self, *args, **kwargs) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()
        return self.count(*args, **kwargs)


def race(*callables) -> list:
    """Run each callable in a thread of its own (its own database connection), all at once."""
    results: list = [None] * len(callables)
    start = threading.Barrier(len(callables))

    def run(index: int) -> None:
        try:
            start.wait(timeout=30)
            results[index] = callables[index]()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(callables))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_acceptances_racing_for_the_last_seat_let_exactly_one_in(monkeypatch):
    # Given a tenant with one seat left and two invitations, and counts that meet if they can
    tenant = tenant_with_room_for(2)
    tokens = [pending_invitation(tenant, f"racer{i}@example.com") for i in range(2)]
    monkeypatch.setattr(services, "membership_count", Rendezvous(membership_count))

    # When both are accepted at the same moment, each over its own connection
    def accept(token: str):
        return lambda: APIClient().post(
            ACCEPT, {"token": token, "password": DEFAULT_PASSWORD}, format="json"
        )

    responses = race(*(accept(token) for token in tokens))

    # Then one joins and the other gets quota-exceeded
    assert sorted(r.status_code for r in responses) == [200, 403], responses
    refused = next(r for r in responses if r.status_code == 403)
    assert_problem(refused, 403, "quota-exceeded")
    assert members_of(tenant) == 2


@pytest.mark.django_db(transaction=True)
def test_enforce_quota_itself_lets_one_of_two_racing_creates_through():
    # Given a tenant with one seat left, and two writers that each check the quota, then create
    tenant = tenant_with_room_for(2)
    newcomers = [make_member(make_tenant(), roles=["viewer"]).user for _ in range(2)]
    count = Rendezvous(lambda: membership_count(tenant=tenant))

    def join(user):
        def create() -> str:
            with transaction.atomic(), tenant_context(tenant.id):
                enforce_quota(tenant=tenant, resource=Resource.MEMBERS, count=count)
                Membership.objects.create(tenant=tenant, user=user)
            return "created"

        return create

    # When both run at once
    outcomes = race(*(join(user) for user in newcomers))

    # Then exactly one created, and the other was refused
    assert [o for o in outcomes if o == "created"] == ["created"], outcomes
    refused = next(o for o in outcomes if o != "created")
    assert isinstance(refused, Problem), refused
    assert refused.extra["limit"] == 2
    assert members_of(tenant) == 2
