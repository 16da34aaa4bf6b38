"""Retention per tenant (kernel/retention.py): the plan sets how long a tenant's audit events and
notifications are kept, a tenant may keep them less long, and the hourly prune jobs honour each
tenant's own cut-off, in batches of tenants, with the audit hash chain still verifiable."""

import itertools
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kernel import audit_chain, retention
from kernel.context import operator_scope
from kernel.permissions import BUILTIN_ROLES
from kernel.tasks import audit_prune_task
from kernel.tenancy.models import (
    AuditChainHead,
    AuditEvent,
    Membership,
    Plan,
    PlatformAuditEvent,
    Role,
    Tenant,
)
from notifications.models import Notification
from notifications.tasks import notifications_prune_task
from tests.factories import make_member, make_tenant
from tests.helpers import API, assert_problem, client_for, outcome, owner_of, tasks_run_inline
from tests.kernel.test_audit import add_event

pytestmark = pytest.mark.django_db

TENANT = f"{API}/tenant/"
VERIFY = f"{API}/audit-events/verify/"
ADMIN_TENANTS = "/admin/tenants/tenant/"
_seq = itertools.count()


# --- helpers -----------------------------------------------------------------------------------


def add_notification(tenant, *, days_ago: float) -> Notification:
    """A notification of the tenant's owner, stored `days_ago` days ago."""
    with operator_scope("test setup: a notification"):
        notification = Notification.objects.create(
            tenant=tenant,
            user=owner_of(tenant),
            topic="tests.thing.done",
            event_id=uuid.uuid4().hex,
        )
        # created_at is set on insert (auto_now_add): dated afterwards, as the test needs.
        Notification.objects.filter(pk=notification.pk).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )
    return notification


def remaining_events(events) -> set:
    with outcome():
        return set(
            AuditEvent.objects.filter(pk__in=[e.pk for e in events]).values_list("pk", flat=True)
        )


def remaining_notifications(notifications) -> set:
    with outcome():
        return set(
            Notification.objects.filter(pk__in=[n.pk for n in notifications]).values_list(
                "pk", flat=True
            )
        )


def prune_both() -> tuple[int, int]:
    """The two beat jobs, run as the worker runs them."""
    with tasks_run_inline():
        return audit_prune_task.delay().get(), notifications_prune_task.delay().get()


def stored(tenant) -> Tenant:
    with outcome():
        return Tenant.objects.select_related("plan").get(pk=tenant.pk)


def tenant_with_history(*, days_ago: tuple[int, ...], audit_retention_days: int) -> Tenant:
    """A tenant whose chain holds events appended long ago (as a tenant with years of history
    has), with the built-in roles, so that its owner can sign in and verify it."""
    with operator_scope("test setup: a tenant with old events"), transaction.atomic():
        tenant = Tenant.objects.create(
            name="Historic",
            slug=f"historic-{next(_seq)}-{uuid.uuid4().hex[:6]}",
            plan=Plan.objects.get(code="pro"),
            audit_retention_days=audit_retention_days,
        )
        now = timezone.now()
        for days in days_ago:
            audit_chain.append(
                AuditEvent(
                    tenant_id=tenant.id,
                    actor_type=AuditEvent.ActorType.SYSTEM,
                    actor_label="system",
                    action="tests.thing.done",
                    target_type="thing",
                    created_at=now - timedelta(days=days),
                )
            )
        Role.objects.bulk_create(
            Role(
                tenant=tenant,
                name=name,
                description=description,
                permissions=sorted(permissions),
                is_builtin=True,
            )
            for name, (description, permissions) in BUILTIN_ROLES.items()
        )
    make_member(tenant, roles=["owner"])
    return tenant


# --- the plans ---------------------------------------------------------------------------------


def test_each_plan_sets_its_retention():
    with outcome():
        plans = {
            plan.code: (plan.audit_retention_days, plan.notification_retention_days)
            for plan in Plan.objects.filter(code__in=["free", "pro", "enterprise"])
        }

    assert plans == {"free": (365, 30), "pro": (730, 90), "enterprise": (2555, 365)}


def test_a_tenant_reads_its_retention_and_its_plans(tenant):
    response = client_for(owner_of(tenant), tenant).get(TENANT)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["audit_retention_days"], body["plan_audit_retention_days"]) == (365, 365)
    assert (body["notification_retention_days"], body["plan_notification_retention_days"]) == (
        30,
        30,
    )


# --- the prune jobs ----------------------------------------------------------------------------


def test_each_tenant_is_pruned_at_its_own_plans_retention(tenant):
    rich = make_tenant(name="Rich", plan_code="enterprise")
    gone = [
        add_event(tenant, days_ago=366),
        add_event(rich, days_ago=2556),
    ]
    kept = [
        add_event(tenant, days_ago=364),
        add_event(rich, days_ago=366),
        add_event(rich, days_ago=2554),
    ]
    gone_notes = [add_notification(tenant, days_ago=31), add_notification(rich, days_ago=366)]
    kept_notes = [
        add_notification(tenant, days_ago=29),
        add_notification(rich, days_ago=31),
        add_notification(rich, days_ago=364),
    ]

    deleted_events, deleted_notes = prune_both()

    assert deleted_events >= 2
    assert deleted_notes >= 2
    assert remaining_events(gone + kept) == {event.pk for event in kept}
    assert remaining_notifications(gone_notes + kept_notes) == {note.pk for note in kept_notes}


def test_a_tenant_that_keeps_less_than_its_plan_is_pruned_at_its_own_choice(
    tenant, django_capture_on_commit_callbacks
):
    other = make_tenant(name="Other")
    owner = client_for(owner_of(tenant), tenant)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.patch(
            TENANT,
            {"audit_retention_days": 30, "notification_retention_days": 7},
            format="json",
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["audit_retention_days"], body["plan_audit_retention_days"]) == (30, 365)
    assert (body["notification_retention_days"], body["plan_notification_retention_days"]) == (
        7,
        30,
    )
    assert owner.get(TENANT).json()["audit_retention_days"] == 30
    gone = [add_event(tenant, days_ago=31)]
    kept = [add_event(tenant, days_ago=29), add_event(other, days_ago=31)]
    gone_notes = [add_notification(tenant, days_ago=8)]
    kept_notes = [add_notification(tenant, days_ago=6), add_notification(other, days_ago=8)]

    prune_both()

    assert remaining_events(gone + kept) == {event.pk for event in kept}
    assert remaining_notifications(gone_notes + kept_notes) == {note.pk for note in kept_notes}


def test_the_choice_is_recorded_in_the_tenants_audit_log(tenant):
    owner = client_for(owner_of(tenant), tenant)

    assert owner.patch(TENANT, {"audit_retention_days": 60}, format="json").status_code == 200
    assert owner.patch(TENANT, {"audit_retention_days": None}, format="json").status_code == 200

    with outcome():
        changes = [
            event.changes
            for event in AuditEvent.objects.filter(
                tenant=tenant, action="tenants.tenant.updated"
            ).order_by("created_at")
        ]
    assert changes == [
        {"audit_retention_days": [None, 60]},
        {"audit_retention_days": [60, None]},
    ]
    assert stored(tenant).audit_retention == 365


# --- what a tenant may not choose --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [("audit_retention_days", 366, 365), ("notification_retention_days", 31, 30)],
)
def test_a_retention_beyond_the_plans_is_refused_naming_its_limit(tenant, field, value, limit):
    owner = client_for(owner_of(tenant), tenant)

    response = owner.patch(TENANT, {field: value, "name": "Renamed"}, format="json")

    body = assert_problem(response, 400, "validation-error")
    (error,) = body["errors"]
    assert error["field"] == field
    assert error["code"] == "max_value"
    assert f"At most {limit} days on the Free plan" in error["message"]
    after = stored(tenant)
    assert (after.name, getattr(after, field)) == (tenant.name, None)


@pytest.mark.parametrize(
    "body",
    [
        {"audit_retention_days": 6},
        {"audit_retention_days": 0},
        {"notification_retention_days": 0},
        {"notification_retention_days": "a month"},
        {"audit_retention_days": 30.5},
    ],
)
def test_a_retention_below_the_minimum_or_not_a_number_is_refused(tenant, body):
    owner = client_for(owner_of(tenant), tenant)

    response = owner.patch(TENANT, body, format="json")

    assert {error["field"] for error in assert_problem(response, 400)["errors"]} == set(body)
    after = stored(tenant)
    assert (after.audit_retention_days, after.notification_retention_days) == (None, None)


def test_only_an_owner_keeps_the_audit_log_less_long(tenant, admin_client):
    response = admin_client.patch(TENANT, {"audit_retention_days": 30}, format="json")

    assert_problem(response, 403, "permission-denied")
    assert stored(tenant).audit_retention_days is None
    # Notifications are the inbox, not evidence: tenant.manage is enough.
    response = admin_client.patch(TENANT, {"notification_retention_days": 7}, format="json")
    assert response.status_code == 200, response.content
    # Once an owner has shortened it, keeping more again (up to the plan's) loses nothing.
    owner = client_for(owner_of(tenant), tenant)
    assert owner.patch(TENANT, {"audit_retention_days": 30}, format="json").status_code == 200
    response = admin_client.patch(TENANT, {"audit_retention_days": 60}, format="json")
    assert response.status_code == 200, response.content
    assert stored(tenant).audit_retention == 60


def test_a_member_without_tenant_manage_changes_no_retention(tenant):
    viewer = client_for(make_member(tenant, roles=["viewer"]).user, tenant)

    response = viewer.patch(TENANT, {"notification_retention_days": 7}, format="json")

    assert_problem(response, 403, "permission-denied")
    assert stored(tenant).notification_retention_days is None


def test_the_database_never_prunes_what_a_tenants_retention_keeps(tenant):
    if connection.vendor != "postgresql":
        pytest.skip("the guard is the database function's")
    kept = add_event(tenant, days_ago=30)  # the free plan keeps a year

    # Asked to delete everything more than two days old, the function deletes nothing of it.
    with (
        operator_scope("test: the prune's own guard"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT tenants_auditevent_prune_tenants(%s::uuid[], %s::timestamptz[])",
            [[tenant.id], [timezone.now() - timedelta(days=2)]],
        )
        assert cursor.fetchone()[0] == 0

    assert remaining_events([kept]) == {kept.pk}


# --- the audit chain ---------------------------------------------------------------------------


def test_the_chain_still_verifies_after_a_per_tenant_prune():
    tenant = tenant_with_history(days_ago=(40, 20, 10, 3), audit_retention_days=7)
    longer = tenant_with_history(days_ago=(40, 3), audit_retention_days=365)
    with outcome():
        ten_days_old = AuditEvent.objects.filter(tenant=tenant).order_by("created_at")[2]

    prune_both()

    with outcome():
        head = AuditChainHead.objects.get(tenant=tenant)
        actions = list(
            AuditEvent.objects.filter(tenant=tenant)
            .order_by("created_at", "id")
            .values_list("action", flat=True)
        )
        untouched = AuditEvent.objects.filter(tenant=longer).count()
    assert (head.anchor_event_id, head.anchor_hash) == (ten_days_old.id, ten_days_old.hash)
    assert actions[:2] == ["tests.thing.done", "tenants.audit.pruned"]
    assert untouched == 2
    with outcome():
        owner = Membership.objects.select_related("user").get(tenant=tenant).user
    response = client_for(owner, tenant).get(VERIFY)
    assert response.status_code == 200, response.content
    body = response.json()
    with outcome():
        head = AuditChainHead.objects.get(tenant=tenant)
    # From the anchor on: the 3-day-old event, the anchor's own event, and any the sign-in wrote.
    assert body == {"valid": True, "events": body["events"], "head": head.hash}
    assert body["events"] >= 2


# --- a plan change ------------------------------------------------------------------------------


def test_an_operators_plan_change_applies_at_the_next_prune(
    operator_client, django_capture_on_commit_callbacks
):
    tenant = make_tenant(name="Downsized", plan_code="pro")
    owner = client_for(owner_of(tenant), tenant)
    # The tenant kept less than the pro plan's two years, but more than the free plan allows.
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.patch(TENANT, {"audit_retention_days": 500}, format="json")
    assert response.status_code == 200, response.content
    event = add_event(tenant, days_ago=400)
    note = add_notification(tenant, days_ago=60)
    prune_both()
    assert remaining_events([event])
    assert remaining_notifications([note])

    with outcome():
        membership = Membership.objects.get(tenant=tenant)
        free = Plan.objects.get(code="free")
    # On commit, the change refreshes the tenant's cached principals (its members see the plan).
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            f"{ADMIN_TENANTS}{tenant.id}/change/",
            {
                "name": tenant.name,
                "slug": tenant.slug,
                "status": "active",
                "plan": free.pk,
                "settings": "{}",
                # The read-only memberships inline, as the page sends it back.
                "-1-TOTAL_FORMS": "1",
                "-1-INITIAL_FORMS": "1",
                "-1-0-id": str(membership.pk),
                "-1-0-tenant": str(tenant.pk),
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    body = owner.get(TENANT).json()
    assert (body["audit_retention_days"], body["plan_audit_retention_days"]) == (365, 365)

    prune_both()

    assert not remaining_events([event])
    assert not remaining_notifications([note])


def test_an_operator_changes_a_plans_retention_through_the_admin(operator_client):
    with outcome():
        plan = Plan.objects.create(code=f"custom-{next(_seq)}", name="Custom")
    tenant = make_tenant(name="Custom tenant", plan_code=plan.code)
    event = add_event(tenant, days_ago=100)
    form = {
        field: getattr(plan, field)
        for field in (
            "code",
            "name",
            "requests_per_minute",
            "burst",
            "max_members",
            "max_api_keys",
            "max_products",
            "max_invitations_per_day",
            "max_oauth_apps",
            "notification_retention_days",
        )
    }

    refused = operator_client.post(
        f"/admin/tenants/plan/{plan.pk}/change/", {**form, "audit_retention_days": 6}
    )
    assert refused.status_code == 200  # the form again, with its error: a week at least
    response = operator_client.post(
        f"/admin/tenants/plan/{plan.pk}/change/", {**form, "audit_retention_days": 60}
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    with outcome():
        (change,) = PlatformAuditEvent.objects.filter(
            action="tenants.plan.updated", target_id=str(plan.pk)
        )
    assert change.changes == {"audit_retention_days": [365, 60]}
    prune_both()
    assert not remaining_events([event])


# --- bounded work ------------------------------------------------------------------------------


def prune_queries() -> int:
    with CaptureQueriesContext(connection) as queries:
        prune_both()
    return len(queries)


def test_the_prune_jobs_queries_do_not_grow_with_the_tenants():
    make_tenant(name="First")
    before = prune_queries()
    for n in range(6):
        tenant = make_tenant(name=f"More {n}")
        # Recent rows, nothing to prune: the tenants count, their rows are not read one by one.
        add_event(tenant, days_ago=1)
        add_notification(tenant, days_ago=1)

    assert prune_queries() == before


def test_tenants_are_read_in_batches_one_query_each(django_assert_num_queries):
    for n in range(5):
        make_tenant(name=f"Batch {n}")
    with outcome():
        tenants = Tenant.objects.count()

    with django_assert_num_queries(-(-tenants // 2) + (1 if tenants % 2 == 0 else 0)):
        batches = list(retention.cutoff_batches(retention.AUDIT, batch_size=2))

    assert sum(len(batch.by_tenant) for batch in batches) == tenants
    assert all(len(batch.by_tenant) <= 2 for batch in batches)
