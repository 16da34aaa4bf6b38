"""The platform's audit log: operators' changes to plans and users, which belong to no tenant.

Through the admin's real forms and the create_operator command: each change writes its event in
the platform's log (and, for what concerns a member, in that member's tenants' logs), with the
operator as the actor and secrets redacted; a save that changes nothing writes nothing; the log
can be read and filtered but never changed, down to the database.
"""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from accounts import services
from kernel import audit
from kernel.context import operator_scope
from kernel.tasks import audit_prune_task
from kernel.tenancy.models import AuditEvent, Plan, PlatformAuditEvent
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant, make_user
from tests.helpers import (
    API,
    ME,
    assert_the_database_refuses,
    assert_the_orm_refuses_to_change,
    client_for,
    outcome,
    owner_of,
    tasks_run_inline,
)

pytestmark = pytest.mark.django_db

User = get_user_model()

ADMIN = "/admin/"
PLANS = f"{ADMIN}tenants/plan/"
USERS = f"{ADMIN}accounts/user/"
GROUPS = f"{ADMIN}auth/group/"
LOG = f"{ADMIN}tenants/platformauditevent/"
EVENTS = f"{API}/audit-events/"
USER_AGENT = "platform-audit-test/1.0"
NEW_PASSWORD = "an operator chosen passphrase 42"


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def operator_agent(operator) -> Client:
    """`operator` signed in to the admin through a client that sends USER_AGENT, so that the
    events of its requests can be checked for it."""
    client = Client(HTTP_USER_AGENT=USER_AGENT)
    assert client.login(email=operator.email, password=DEFAULT_PASSWORD)
    return client


def platform_events(**filters) -> list[PlatformAuditEvent]:
    return list(PlatformAuditEvent.objects.filter(**filters).order_by("created_at", "action"))


def new_platform_events(before: set) -> list[PlatformAuditEvent]:
    return [event for event in platform_events() if event.id not in before]


def event_ids() -> set:
    return set(PlatformAuditEvent.objects.values_list("id", flat=True))


def tenant_events(tenant, **filters) -> list[AuditEvent]:
    with outcome():
        return list(AuditEvent.objects.filter(tenant_id=tenant.id, **filters))


def assert_by_operator(event, operator, response) -> None:
    assert (event.actor_type, event.actor_id, event.actor_label) == (
        "operator",
        operator.pk,
        operator.email,
    )
    assert event.request_id == response["X-Request-ID"]
    assert event.ip == "127.0.0.1"
    assert event.user_agent == USER_AGENT


def plan_form(plan: Plan, **overrides) -> dict:
    values = {
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
            "audit_retention_days",
            "notification_retention_days",
        )
    }
    return {**values, **overrides}


def user_form(user, **overrides) -> dict:
    """The user change form as the page sends it back; a checkbox left out is unticked."""
    values = {
        "email": user.email,
        "name": user.name,
        "groups": [group.pk for group in user.groups.all()],
        "user_permissions": [permission.pk for permission in user.user_permissions.all()],
        **{flag: "on" for flag in ("is_active", "is_staff", "is_superuser") if getattr(user, flag)},
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not False}


def add_platform_event(*, days_ago: float) -> PlatformAuditEvent:
    with transaction.atomic():
        event = PlatformAuditEvent(
            actor_type=PlatformAuditEvent.ActorType.SYSTEM,
            action="tests.thing.done",
            target_type="thing",
            created_at=timezone.now() - timedelta(days=days_ago),
        )
        event.save()
        return event


# --- plans -------------------------------------------------------------------------------------


def test_creating_a_plan_is_recorded_as_the_operators(operator_agent, operator):
    response = operator_agent.post(
        f"{PLANS}add/",
        {
            "code": "startup",
            "name": "Startup",
            "requests_per_minute": 900,
            "burst": 150,
            "max_members": 10,
            "max_api_keys": 4,
            "max_products": 5000,
            "max_invitations_per_day": 30,
            "max_oauth_apps": 3,
            "audit_retention_days": 180,
            "notification_retention_days": 60,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    plan = Plan.objects.get(code="startup")
    (event,) = platform_events(action="tenants.plan.created")
    assert (event.target_type, event.target_id) == ("plan", str(plan.pk))
    assert event.changes == {
        "code": [None, "startup"],
        "name": [None, "Startup"],
        "requests_per_minute": [None, 900],
        "burst": [None, 150],
        "max_members": [None, 10],
        "max_api_keys": [None, 4],
        "max_products": [None, 5000],
        "max_invitations_per_day": [None, 30],
        "max_oauth_apps": [None, 3],
        "audit_retention_days": [None, 180],
        "notification_retention_days": [None, 60],
    }
    assert_by_operator(event, operator, response)


def test_changing_a_plans_limits_records_the_diff_in_the_platform_log_only(
    operator_agent, operator, django_capture_on_commit_callbacks
):
    # Given a tenant on the pro plan, whose member's principal is cached
    tenant = make_tenant(name="Acme", plan_code="pro")
    member = client_for(owner_of(tenant), tenant)
    assert member.get(ME).status_code == 200
    plan = Plan.objects.get(code="pro")
    tenant_log = {event.id for event in tenant_events(tenant)}

    # When an operator raises two of its limits
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_agent.post(
            f"{PLANS}{plan.pk}/change/",
            plan_form(plan, max_members=plan.max_members + 5, burst=plan.burst * 2),
        )

    # Then the platform log has the diff, and the tenant's own log nothing new
    assert response.status_code == 302, response.content.decode()[:2000]
    (event,) = platform_events(action="tenants.plan.updated")
    assert event.changes == {
        "burst": [plan.burst, plan.burst * 2],
        "max_members": [plan.max_members, plan.max_members + 5],
    }
    assert (event.target_type, event.target_id) == ("plan", str(plan.pk))
    assert_by_operator(event, operator, response)
    assert {event.id for event in tenant_events(tenant)} == tenant_log
    assert member.get(ME).status_code == 200


def test_saving_a_plan_unchanged_records_nothing(operator_agent):
    plan = Plan.objects.get(code="pro")

    response = operator_agent.post(f"{PLANS}{plan.pk}/change/", plan_form(plan))

    assert response.status_code == 302
    assert platform_events() == []


def test_deleting_plans_is_recorded_one_by_one(operator_agent, operator):
    spare = Plan.objects.create(code="spare", name="Spare")
    spares = [Plan.objects.create(code=f"spare{n}", name=f"Spare {n}") for n in (1, 2)]

    deleted = operator_agent.post(f"{PLANS}{spare.pk}/delete/", {"post": "yes"})
    bulk = operator_agent.post(
        PLANS,
        {
            "action": "delete_selected",
            "_selected_action": [plan.pk for plan in spares],
            "post": "yes",
        },
    )

    assert (deleted.status_code, bulk.status_code) == (302, 302)
    assert not Plan.objects.filter(code__startswith="spare").exists()
    events = platform_events(action="tenants.plan.deleted")
    assert sorted(event.target_id for event in events) == sorted(
        str(plan.pk) for plan in (spare, *spares)
    )
    by_target = {event.target_id: event for event in events}
    assert by_target[str(spare.pk)].changes["code"] == ["spare", None]
    assert_by_operator(by_target[str(spare.pk)], operator, deleted)


def test_an_event_that_cannot_be_written_undoes_the_plans_change(operator_agent, monkeypatch):
    plan = Plan.objects.get(code="pro")

    def fail(*args, **kwargs):
        raise DatabaseError("the audit table is unavailable")

    monkeypatch.setattr(PlatformAuditEvent, "save", fail)

    response = operator_agent.post(f"{PLANS}{plan.pk}/change/", plan_form(plan, max_members=999))

    assert response.status_code == 500
    assert Plan.objects.get(pk=plan.pk).max_members == plan.max_members


# --- users -------------------------------------------------------------------------------------


def test_creating_a_user_is_recorded_with_the_password_redacted(operator_agent, operator):
    response = operator_agent.post(
        f"{USERS}add/",
        {
            "email": "New.Person@Example.com",
            "name": "New Person",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email="new.person@example.com")
    (event,) = platform_events(action="accounts.user.created")
    assert (event.target_type, event.target_id) == ("user", str(user.pk))
    assert event.changes == {
        "email": [None, "new.person@example.com"],
        "name": [None, "New Person"],
        "is_active": [None, True],
        "is_staff": [None, False],
        "is_superuser": [None, False],
        "password": [None, "[REDACTED]"],
    }
    stored = json.dumps(event.changes)
    assert NEW_PASSWORD not in stored
    assert user.password not in stored
    assert_by_operator(event, operator, response)


def test_editing_a_user_records_each_kind_of_change_and_tenants_see_only_theirs(
    operator_agent, operator
):
    # Given a member of a tenant, and a group that grants admin permissions
    tenant = make_tenant(name="Acme")
    user = make_member(tenant, email="member@example.com").user
    support = Group.objects.create(name="support")
    view_plan = Permission.objects.get(codename="view_plan")

    # When an operator renames them, makes them staff and gives them the group and a permission
    response = operator_agent.post(
        f"{USERS}{user.pk}/change/",
        user_form(
            user,
            name="Renamed Member",
            is_staff="on",
            groups=[support.pk],
            user_permissions=[view_plan.pk],
        ),
    )

    # Then the platform log has one event per kind of change
    assert response.status_code == 302, response.content.decode()[:2000]
    events = {event.action: event for event in platform_events(target_id=str(user.pk))}
    assert set(events) == {"accounts.user.updated", "accounts.user.privileges_changed"}
    assert events["accounts.user.updated"].changes == {"name": ["", "Renamed Member"]}
    assert events["accounts.user.privileges_changed"].changes == {
        "is_staff": [False, True],
        "groups": [[], ["support"]],
        "user_permissions": [[], ["tenants.view_plan"]],
    }
    for event in events.values():
        assert_by_operator(event, operator, response)
    # ... and the member's tenant sees the rename, not the operators' own privileges
    (seen,) = tenant_events(tenant, target_id=str(user.pk))
    assert (seen.action, seen.changes) == (
        "accounts.user.updated",
        events["accounts.user.updated"].changes,
    )
    assert seen.actor_type == "operator"
    user.refresh_from_db()
    assert list(user.groups.all()) == [support]


def test_saving_a_user_unchanged_records_nothing(operator_agent):
    tenant = make_tenant(name="Acme")
    user = make_member(tenant, email="member@example.com").user
    tenant_log = {event.id for event in tenant_events(tenant)}

    response = operator_agent.post(f"{USERS}{user.pk}/change/", user_form(user))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert platform_events() == []
    assert {event.id for event in tenant_events(tenant)} == tenant_log


def test_deactivating_a_member_is_in_their_tenants_logs_and_ends_their_sessions_at_once(
    operator_agent, operator, django_capture_on_commit_callbacks
):
    # Given a person who belongs to Alpha and Beta, signed in to Alpha, and a tenant Gamma
    alpha, beta, gamma = (make_tenant(name=name) for name in ("Alpha", "Beta", "Gamma"))
    user = make_member(alpha, email="member@example.com").user
    make_member(beta, user=user)
    session = client_for(user, alpha)
    assert session.get(ME).status_code == 200  # the principal is cached now

    # When an operator unticks "active" in the admin
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_agent.post(
            f"{USERS}{user.pk}/change/", user_form(user, is_active=False)
        )

    # Then the platform log and the logs of Alpha and Beta, as their owners read them, say so
    assert response.status_code == 302, response.content.decode()[:2000]
    (event,) = platform_events(action="accounts.user.deactivated")
    assert event.changes == {"is_active": [True, False]}
    assert_by_operator(event, operator, response)
    for tenant in (alpha, beta):
        listed = client_for(owner_of(tenant), tenant).get(
            EVENTS, {"action": "accounts.user.deactivated"}
        )
        assert listed.status_code == 200
        (seen,) = listed.json()["results"]
        assert (seen["target_type"], seen["target_id"]) == ("user", str(user.pk))
        assert seen["changes"] == {"is_active": [True, False]}
        assert (seen["actor_type"], seen["actor_id"]) == ("operator", str(operator.pk))
    gamma_log = client_for(owner_of(gamma), gamma).get(EVENTS, {"action": "accounts.user.*"})
    assert gamma_log.json()["results"] == []
    # ... and the access token they hold is refused from the next request
    assert session.get(ME).status_code == 401

    # When the operator reactivates them, that is recorded too
    user.refresh_from_db()
    operator_agent.post(f"{USERS}{user.pk}/change/", user_form(user, is_active="on"))
    assert [event.action for event in tenant_events(alpha, action__startswith="accounts.")] == [
        "accounts.user.reactivated",
        "accounts.user.deactivated",
    ]


def test_setting_a_password_in_the_admin_records_only_a_marker(
    operator_agent, operator, django_capture_on_commit_callbacks
):
    tenant = make_tenant(name="Acme")
    user = make_member(tenant, email="member@example.com").user
    session = client_for(user, tenant)
    assert session.get(ME).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_agent.post(
            f"{USERS}{user.pk}/password/",
            {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    (event,) = platform_events(action="accounts.user.password_set")
    assert event.changes == {"password": ["[REDACTED]", "[REDACTED]"]}
    assert_by_operator(event, operator, response)
    (seen,) = tenant_events(tenant, action="accounts.user.password_set")
    assert seen.changes == {"password": ["[REDACTED]", "[REDACTED]"]}
    assert seen.actor_id == operator.pk
    for stored in (event, seen):
        assert NEW_PASSWORD not in json.dumps(stored.changes)
        assert user.password not in json.dumps(stored.changes)
    assert session.get(ME).status_code == 401


def test_disabling_password_sign_in_is_recorded_as_no_password(operator_agent):
    user = make_user(email="member@example.com")

    response = operator_agent.post(
        f"{USERS}{user.pk}/password/", {"usable_password": "false", "unset-password": "1"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    (event,) = platform_events(action="accounts.user.password_set")
    assert event.changes == {"password": ["[REDACTED]", None]}


def test_deleting_users_is_recorded_one_by_one(operator_agent, operator):
    users = [make_user(email=f"leaving{n}@example.com") for n in (1, 2, 3)]

    deleted = operator_agent.post(f"{USERS}{users[0].pk}/delete/", {"post": "yes"})
    bulk = operator_agent.post(
        USERS,
        {
            "action": "delete_selected",
            "_selected_action": [user.pk for user in users[1:]],
            "post": "yes",
        },
    )

    assert (deleted.status_code, bulk.status_code) == (302, 302)
    assert not User.objects.filter(email__startswith="leaving").exists()
    events = {event.target_id: event for event in platform_events(action="accounts.user.deleted")}
    assert set(events) == {str(user.pk) for user in users}
    assert events[str(users[0].pk)].changes["email"] == ["leaving1@example.com", None]
    assert_by_operator(events[str(users[0].pk)], operator, deleted)


def test_a_member_cannot_be_deleted_in_the_admin(operator_agent):
    # Their memberships are read-only there: an operator deactivates them instead.
    tenant = make_tenant(name="Acme")
    user = make_member(tenant, email="member@example.com").user

    response = operator_agent.post(f"{USERS}{user.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert User.objects.filter(pk=user.pk).exists()
    assert platform_events() == []


def test_deleting_a_member_through_the_service_is_recorded_in_their_tenants(
    operator, django_capture_on_commit_callbacks
):
    alpha, beta = make_tenant(name="Alpha"), make_tenant(name="Beta")
    leaving = make_member(alpha, email="leaving@example.com").user
    leaving_id = leaving.pk
    session = client_for(leaving, alpha)
    assert session.get(ME).status_code == 200

    with (
        django_capture_on_commit_callbacks(execute=True),
        audit.acting_as(audit.Actor.operator(operator)),
    ):
        services.user_delete(user=leaving)

    (event,) = platform_events(action="accounts.user.deleted")
    assert event.actor_id == operator.pk
    (seen,) = tenant_events(alpha, action="accounts.user.deleted")
    assert (seen.target_id, seen.actor_id) == (str(leaving_id), operator.pk)
    assert seen.changes == {"email": ["leaving@example.com", None], "name": ["", None]}
    assert tenant_events(beta, action="accounts.user.deleted") == []
    assert session.get(ME).status_code == 401


# --- groups ------------------------------------------------------------------------------------


def group_form(group: Group, **overrides) -> dict:
    values = {"name": group.name, "permissions": [p.pk for p in group.permissions.all()]}
    return {**values, **overrides}


def test_creating_a_group_records_its_name_and_permissions(operator_agent, operator):
    view_plan = Permission.objects.get(codename="view_plan")
    change_user = Permission.objects.get(codename="change_user")

    response = operator_agent.post(
        f"{GROUPS}add/", {"name": "support", "permissions": [view_plan.pk, change_user.pk]}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    group = Group.objects.get(name="support")
    assert set(group.permissions.all()) == {view_plan, change_user}
    (event,) = platform_events()
    assert (event.action, event.target_type, event.target_id) == (
        "accounts.group.created",
        "group",
        str(group.pk),
    )
    assert event.changes == {
        "name": [None, "support"],
        "permissions": [None, ["accounts.change_user", "tenants.view_plan"]],
    }
    assert_by_operator(event, operator, response)


def test_changing_a_groups_permissions_records_the_diff(operator_agent, operator):
    group = Group.objects.create(name="support")
    view_plan = Permission.objects.get(codename="view_plan")
    change_user = Permission.objects.get(codename="change_user")
    group.permissions.set([view_plan])

    response = operator_agent.post(
        f"{GROUPS}{group.pk}/change/",
        group_form(group, name="operators", permissions=[change_user.pk]),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(group.permissions.all()) == [change_user]
    (event,) = platform_events()
    assert (event.action, event.target_id) == ("accounts.group.updated", str(group.pk))
    assert event.changes == {
        "name": ["support", "operators"],
        "permissions": [["tenants.view_plan"], ["accounts.change_user"]],
    }
    assert_by_operator(event, operator, response)


def test_saving_a_group_unchanged_records_nothing(operator_agent):
    group = Group.objects.create(name="support")
    group.permissions.set([Permission.objects.get(codename="view_plan")])

    response = operator_agent.post(f"{GROUPS}{group.pk}/change/", group_form(group))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert platform_events() == []


def test_deleting_groups_is_recorded_one_by_one(operator_agent, operator):
    groups = [Group.objects.create(name=f"spare{n}") for n in (1, 2, 3)]
    groups[0].permissions.set([Permission.objects.get(codename="view_plan")])
    member = make_user(email="staff@example.com", is_staff=True)
    member.groups.set([groups[0]])

    deleted = operator_agent.post(f"{GROUPS}{groups[0].pk}/delete/", {"post": "yes"})
    bulk = operator_agent.post(
        GROUPS,
        {
            "action": "delete_selected",
            "_selected_action": [group.pk for group in groups[1:]],
            "post": "yes",
        },
    )

    assert (deleted.status_code, bulk.status_code) == (302, 302)
    assert not Group.objects.filter(name__startswith="spare").exists()
    assert list(member.groups.all()) == []
    events = {event.target_id: event for event in platform_events(action="accounts.group.deleted")}
    assert set(events) == {str(group.pk) for group in groups}
    assert events[str(groups[0].pk)].changes == {
        "name": ["spare1", None],
        "permissions": [["tenants.view_plan"], None],
    }
    assert events[str(groups[1].pk)].changes == {
        "name": ["spare2", None],
        "permissions": [[], None],
    }
    assert_by_operator(events[str(groups[0].pk)], operator, deleted)


def test_an_event_that_cannot_be_written_undoes_the_groups_change(operator_agent, monkeypatch):
    group = Group.objects.create(name="support")

    def fail(*args, **kwargs):
        raise DatabaseError("the audit table is unavailable")

    monkeypatch.setattr(PlatformAuditEvent, "save", fail)

    response = operator_agent.post(
        f"{GROUPS}{group.pk}/change/",
        group_form(group, permissions=[Permission.objects.get(codename="view_plan").pk]),
    )

    assert response.status_code == 500
    assert list(group.permissions.all()) == []


# --- the create_operator command -----------------------------------------------------------------


def run(*args, stdin: str = "") -> str:
    out = StringIO()
    call_command(*args, stdin=StringIO(stdin), stdout=out)
    return out.getvalue()


def test_create_operator_records_the_creation_by_the_system():
    run(
        "create_operator",
        "--email",
        "ops2@example.com",
        "--password-stdin",
        stdin=f"{NEW_PASSWORD}\n",
    )

    user = User.objects.get(email="ops2@example.com")
    (event,) = platform_events()
    assert (event.action, event.target_id) == ("accounts.user.created", str(user.pk))
    assert (event.actor_type, event.actor_id, event.actor_label) == ("system", None, "system")
    assert event.changes["is_superuser"] == [None, True]
    assert event.changes["password"] == [None, "[REDACTED]"]
    assert NEW_PASSWORD not in json.dumps(event.changes)


def test_create_operator_records_a_promotion_and_nothing_when_nothing_changes():
    tenant = make_tenant(name="Acme")
    user = make_member(tenant, email="member@example.com").user

    run(
        "create_operator",
        "--email",
        "member@example.com",
        "--password-stdin",
        stdin=f"{NEW_PASSWORD}\n",
    )
    after_promotion = platform_events()
    run("create_operator", "--email", "member@example.com")

    assert {event.action: event.changes for event in after_promotion} == {
        "accounts.user.privileges_changed": {
            "is_staff": [False, True],
            "is_superuser": [False, True],
        },
        "accounts.user.password_set": {"password": ["[REDACTED]", "[REDACTED]"]},
    }
    assert platform_events() == after_promotion
    # The member's tenant sees the new password (its sessions end), not the promotion
    (seen,) = tenant_events(tenant, target_id=str(user.pk))
    assert (seen.action, seen.actor_type) == ("accounts.user.password_set", "system")


# --- append-only, everywhere ---------------------------------------------------------------------


def test_the_admin_reads_and_filters_the_log_and_changes_nothing(operator_agent):
    Plan.objects.create(code="spare", name="Spare")
    spare = Plan.objects.get(code="spare")
    operator_agent.post(f"{PLANS}{spare.pk}/change/", plan_form(spare, name="Spare Renamed"))
    (event,) = platform_events()

    changelist = operator_agent.get(LOG)
    filtered = operator_agent.get(LOG, {"action": "tenants.plan.updated", "actor_type": "operator"})
    excluded = operator_agent.get(LOG, {"target_type": "user"})
    page = operator_agent.get(f"{LOG}{event.id}/change/")
    add = operator_agent.get(f"{LOG}add/")
    change = operator_agent.post(f"{LOG}{event.id}/change/", {"action": "tests.admin.forged"})
    delete = operator_agent.post(f"{LOG}{event.id}/delete/", {"post": "yes"})
    bulk = operator_agent.post(LOG, {"action": "delete_selected", "_selected_action": [event.id]})

    assert changelist.status_code == 200
    assert "tenants.plan.updated" in changelist.content.decode()
    assert "delete_selected" not in changelist.content.decode()
    assert "tenants.plan.updated" in filtered.content.decode()
    assert excluded.status_code == 200
    assert str(spare.pk) not in [row.target_id for row in excluded.context["cl"].result_list]
    assert page.status_code == 200
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert bulk.status_code in (200, 302)
    assert PlatformAuditEvent.objects.get(pk=event.id).action == "tenants.plan.updated"


def test_the_orm_refuses_to_change_or_delete_a_platform_event():
    event = add_platform_event(days_ago=0)

    assert_the_orm_refuses_to_change(PlatformAuditEvent, event.id)

    assert PlatformAuditEvent.objects.get(pk=event.id).action == "tests.thing.done"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE tenants_platformauditevent SET action = 'tests.thing.undone'",
        "DELETE FROM tenants_platformauditevent",
    ],
)
@pytest.mark.parametrize("role", ["application", "schema owner"])
def test_the_database_refuses_raw_updates_and_deletes_of_platform_events(statement, role):
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    event = add_platform_event(days_ago=0)

    assert_the_database_refuses(statement, as_schema_owner=role == "schema owner")

    assert PlatformAuditEvent.objects.get(pk=event.id).action == "tests.thing.done"


def test_the_prune_flag_is_no_key_to_the_platform_log_for_the_application_role():
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    event = add_platform_event(days_ago=400)

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.audit_prune', 'on', true)")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            cursor.execute("DELETE FROM tenants_platformauditevent")

    assert PlatformAuditEvent.objects.filter(pk=event.id).exists()


# --- retention -----------------------------------------------------------------------------------


def test_the_prune_job_deletes_old_platform_events_too(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = [add_platform_event(days_ago=31), add_platform_event(days_ago=400)]
    kept = [add_platform_event(days_ago=29), add_platform_event(days_ago=0)]

    with tasks_run_inline():
        deleted = audit_prune_task.delay().get()

    remaining = event_ids()
    assert deleted >= 2
    assert not remaining & {event.id for event in old}
    assert {event.id for event in kept} <= remaining


def test_the_database_never_prunes_the_platform_logs_last_day():
    if connection.vendor != "postgresql":
        pytest.skip("the guard is the database function's")
    event = add_platform_event(days_ago=0)

    with (
        operator_scope("test: the prune's own guard"),
        pytest.raises(DatabaseError, match="never pruned"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SELECT {audit.PLATFORM_PRUNE_FUNCTION}(now())")

    assert PlatformAuditEvent.objects.filter(pk=event.id).exists()
