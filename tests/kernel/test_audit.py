"""The audit log: one event per write, in the write's transaction; readable, never changeable."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from enum import StrEnum

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from rest_framework.test import APIClient

from accounts.services import roles as role_services
from kernel import audit
from kernel.context import operator_scope, tenant_context
from kernel.permissions import Perm
from kernel.tasks import audit_prune_task
from kernel.tenancy.models import AuditEvent, Membership, Plan, Role, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_role, make_tenant
from tests.helpers import (
    API,
    TOKEN,
    assert_problem,
    assert_the_database_refuses,
    assert_the_orm_refuses_to_change,
    outcome,
    owner_of,
    sign_in,
    tasks_run_inline,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme", plan_code="pro")]

EVENTS = f"{API}/audit-events/"
ROLES = f"{API}/roles/"
MEMBERS = f"{API}/members/"
INVITATIONS = f"{API}/invitations/"
KEYS = f"{API}/api-keys/"
TENANT = f"{API}/tenant/"
ADMIN = "/admin/"
USER_AGENT = "audit-test/1.0 (+https://example.com)"
NEW_PASSWORD = "a brand new passphrase 77"


# --- helpers -----------------------------------------------------------------------------------


def agent() -> APIClient:
    """A client that says who it is, so that the user agent can be checked."""
    return APIClient(HTTP_USER_AGENT=USER_AGENT)


def client_as(user, tenant) -> APIClient:
    client = agent()
    sign_in(client, user, tenant)
    return client


def events_of(tenant) -> list[AuditEvent]:
    with outcome():
        return list(AuditEvent.objects.filter(tenant_id=tenant.id).order_by("created_at"))


@contextmanager
def recorded(tenant) -> Iterator[list[AuditEvent]]:
    """The events of `tenant` recorded while the block runs, oldest first."""
    before = {event.id for event in events_of(tenant)}
    new: list[AuditEvent] = []
    yield new
    new.extend(event for event in events_of(tenant) if event.id not in before)


def only(events: list[AuditEvent], action: str) -> AuditEvent:
    assert [event.action for event in events] == [action], [e.action for e in events]
    return events[0]


def assert_from_request(event: AuditEvent, response, *, user_agent: str = USER_AGENT) -> None:
    assert event.request_id == response["X-Request-ID"]
    assert event.ip == "127.0.0.1"
    assert event.user_agent == user_agent


def assert_by_user(event: AuditEvent, user) -> None:
    assert (event.actor_type, event.actor_id, event.actor_label) == ("user", user.pk, user.email)


def role_id(tenant, name: str) -> str:
    with outcome():
        return str(Role.objects.get(tenant=tenant, name=name).pk)


def add_event(tenant, *, action: str = "tests.thing.done", days_ago: float = 0) -> AuditEvent:
    """An event as the services write one (by the system here), dated as the test needs."""
    with operator_scope("test setup: an audit event"), transaction.atomic():
        if not days_ago:
            return audit.record(tenant_id=tenant.id, action=action, target_type="thing")
        # Dated at its insert: an event cannot be updated afterwards, by design.
        event = AuditEvent(
            tenant_id=tenant.id,
            actor_type=AuditEvent.ActorType.SYSTEM,
            action=action,
            target_type="thing",
            created_at=timezone.now() - timedelta(days=days_ago),
        )
        event.save()
        return event


@pytest.fixture
def owner(tenant):
    return owner_of(tenant)


@pytest.fixture
def owner_agent(tenant, owner) -> APIClient:
    """`owner` signed in to `tenant` through a client that sends USER_AGENT."""
    return client_as(owner, tenant)


@pytest.fixture
def operator_agent(operator) -> Client:
    """`operator` signed in to the admin through a client that sends USER_AGENT; the user is
    also its `.operator`."""
    client = Client(HTTP_USER_AGENT=USER_AGENT)
    assert client.login(email=operator.email, password=DEFAULT_PASSWORD)
    client.operator = operator
    return client


# --- one event per write, through the API --------------------------------------------------------


def test_signup_records_the_tenant_created_by_its_new_owner():
    client = agent()
    response = client.post(
        f"{API}/auth/signup/",
        {
            "email": "founder@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant_name": "Founders",
        },
    )

    assert response.status_code == 201, response.content
    with outcome():
        tenant = Tenant.objects.get(slug="founders")
    event = only(events_of(tenant), "tenants.tenant.created")
    assert event.actor_type == "user"
    assert event.actor_label == "founder@example.com"
    assert (event.target_type, event.target_id) == ("tenant", str(tenant.id))
    assert event.changes["owner"] == [None, "founder@example.com"]
    assert DEFAULT_PASSWORD not in json.dumps(event.changes)
    assert_from_request(event, response)


def test_a_tenant_update_records_the_diff_with_secrets_redacted(tenant, owner, owner_agent):
    with recorded(tenant) as new:
        response = owner_agent.patch(
            TENANT,
            {"name": "Acme Corp", "settings": {"currency": "EUR", "webhook_secret": "whsec_abc"}},
        )

    assert response.status_code == 200, response.content
    event = only(new, "tenants.tenant.updated")
    assert_by_user(event, owner)
    assert (event.target_type, event.target_id) == ("tenant", str(tenant.id))
    assert event.changes["name"] == ["Acme", "Acme Corp"]
    assert event.changes["settings"] == [{}, {"currency": "EUR", "webhook_secret": "[REDACTED]"}]
    assert "whsec_abc" not in json.dumps(event.changes)
    assert_from_request(event, response)


def test_the_client_address_is_the_trusted_proxys_view_of_it(tenant, owner_agent, settings):
    settings.TRUSTED_PROXY_COUNT = 1

    with recorded(tenant) as new:
        owner_agent.patch(TENANT, {"name": "Proxied"}, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert only(new, "tenants.tenant.updated").ip == "203.0.113.9"


def test_deleting_the_tenant_is_recorded(tenant, owner, owner_agent, monkeypatch):
    from kernel.tasks import tenant_purge_task

    monkeypatch.setattr(tenant_purge_task, "delay", lambda **kwargs: None)

    with recorded(tenant) as new:
        response = owner_agent.delete(TENANT)

    assert response.status_code == 204
    event = only(new, "tenants.tenant.deleted")
    assert_by_user(event, owner)
    assert event.changes["deleted_at"][0] is None
    assert_from_request(event, response)


def test_role_writes_are_recorded(tenant, owner, owner_agent):
    with recorded(tenant) as created_events:
        created = owner_agent.post(
            ROLES, {"name": "auditors", "permissions": [Perm.AUDIT_READ], "description": "x"}
        )
    role_url = f"{ROLES}{created.json()['id']}/"
    with recorded(tenant) as updated_events:
        updated = owner_agent.patch(role_url, {"permissions": [Perm.AUDIT_READ, Perm.CATALOG_READ]})
    with recorded(tenant) as deleted_events:
        deleted = owner_agent.delete(role_url)

    assert (created.status_code, updated.status_code, deleted.status_code) == (201, 200, 204)
    event = only(created_events, "tenants.role.created")
    assert event.changes == {
        "name": [None, "auditors"],
        "description": [None, "x"],
        "permissions": [None, [Perm.AUDIT_READ]],
    }
    assert_from_request(event, created)
    event = only(updated_events, "tenants.role.updated")
    assert event.changes == {
        "permissions": [[Perm.AUDIT_READ], [Perm.AUDIT_READ, Perm.CATALOG_READ]]
    }
    assert_from_request(event, updated)
    event = only(deleted_events, "tenants.role.deleted")
    assert event.target_id == created.json()["id"]
    assert event.changes["name"] == ["auditors", None]
    for event in (*created_events, *updated_events, *deleted_events):
        assert_by_user(event, owner)
        assert event.target_type == "role"


def test_member_writes_are_recorded(tenant, owner, owner_agent):
    member = make_member(tenant, roles=["viewer"], email="member@example.com")
    url = f"{MEMBERS}{member.pk}/"

    with recorded(tenant) as changed_events:
        changed = owner_agent.patch(url, {"roles": [role_id(tenant, "editor")]})
    with recorded(tenant) as removed_events:
        removed = owner_agent.delete(url)

    assert (changed.status_code, removed.status_code) == (200, 204)
    event = only(changed_events, "tenants.member.roles_changed")
    assert (event.target_type, event.target_id) == ("member", str(member.pk))
    assert event.changes == {"roles": [["viewer"], ["editor"]]}
    assert_by_user(event, owner)
    assert_from_request(event, changed)
    event = only(removed_events, "tenants.member.removed")
    assert event.changes == {"user": ["member@example.com", None], "roles": [["editor"], None]}
    assert_from_request(event, removed)


def test_invitation_writes_are_recorded_and_the_token_is_not(
    tenant, owner, owner_agent, django_capture_on_commit_callbacks
):
    from django.core import mail

    # Sent
    with (
        recorded(tenant) as sent_events,
        tasks_run_inline(),
        django_capture_on_commit_callbacks(execute=True),
    ):
        sent = owner_agent.post(
            INVITATIONS, {"email": "new@example.com", "roles": [role_id(tenant, "editor")]}
        )
    token = mail.outbox[-1].body.split("token=")[1].split()[0]
    # Accepted, by someone signed in nowhere
    with recorded(tenant) as accepted_events:
        accepted = agent().post(
            f"{INVITATIONS}accept/", {"token": token, "password": NEW_PASSWORD, "name": "New"}
        )
    # And another, revoked
    other = owner_agent.post(
        INVITATIONS, {"email": "other@example.com", "roles": [role_id(tenant, "viewer")]}
    )
    with recorded(tenant) as revoked_events:
        revoked = owner_agent.delete(f"{INVITATIONS}{other.json()['id']}/")

    assert (sent.status_code, accepted.status_code, revoked.status_code) == (201, 200, 204)
    event = only(sent_events, "tenants.invitation.created")
    assert event.changes["email"] == [None, "new@example.com"]
    assert event.changes["roles"] == [None, ["editor"]]
    assert_by_user(event, owner)
    assert_from_request(event, sent)
    event = only(accepted_events, "tenants.invitation.accepted")
    with outcome():
        newcomer = Membership.objects.select_related("user").get(
            tenant=tenant, user__email="new@example.com"
        )
    assert_by_user(event, newcomer.user)
    assert event.changes["member"] == [None, str(newcomer.pk)]
    assert_from_request(event, accepted)
    event = only(revoked_events, "tenants.invitation.revoked")
    assert event.target_id == other.json()["id"]
    assert_from_request(event, revoked)
    for event in (*sent_events, *accepted_events, *revoked_events):
        assert token not in json.dumps(event.changes)


def test_password_change_reset_and_logout_are_recorded_without_values(tenant, owner):
    client = agent()
    tokens = sign_in(client, owner, tenant)

    with recorded(tenant) as changed_events:
        changed = client.post(
            f"{API}/auth/password/change/",
            {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {changed.json()['access']}")
    with recorded(tenant) as logout_events:
        logged_out = client.post(f"{API}/auth/logout/", {"refresh": changed.json()["refresh"]})
    uid = urlsafe_base64_encode(force_bytes(owner.pk))
    with outcome():
        owner.refresh_from_db()
    reset_token = default_token_generator.make_token(owner)
    with recorded(tenant) as reset_events:
        reset = agent().post(
            f"{API}/auth/password/reset/confirm/",
            {"uid": uid, "token": reset_token, "new_password": "yet another passphrase 88"},
        )

    assert changed.status_code == 200, changed.content
    assert logged_out.status_code == 204, logged_out.content
    assert reset.status_code == 204, reset.content
    for events, action, response in (
        (changed_events, "accounts.user.password_changed", changed),
        (logout_events, "accounts.user.logged_out", logged_out),
        (reset_events, "accounts.user.password_reset", reset),
    ):
        event = only(events, action)
        assert_by_user(event, owner)
        assert (event.target_type, event.target_id) == ("user", str(owner.pk))
        assert_from_request(event, response)
        text = json.dumps(event.changes)
        for secret in (DEFAULT_PASSWORD, NEW_PASSWORD, "yet another", "argon2", tokens["refresh"]):
            assert secret not in text
    assert only(changed_events, "accounts.user.password_changed").changes == {
        "password": ["[REDACTED]", "[REDACTED]"]
    }


def test_api_key_writes_are_recorded_and_a_keys_own_acts_name_it(tenant, owner, owner_agent):
    with recorded(tenant) as created_events:
        created = owner_agent.post(
            KEYS, {"name": "robot", "permissions": [Perm.ROLES_MANAGE, Perm.MEMBERS_READ]}
        )
    key = created.json()
    machine = APIClient(HTTP_USER_AGENT="robot/2")
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key['key']}")
    with recorded(tenant) as by_key_events:
        by_key = machine.post(ROLES, {"name": "made by a machine", "permissions": []})
    with recorded(tenant) as revoked_events:
        revoked = owner_agent.delete(f"{KEYS}{key['id']}/")

    assert (created.status_code, by_key.status_code, revoked.status_code) == (201, 201, 204)
    event = only(created_events, "accounts.api_key.created")
    assert (event.target_type, event.target_id) == ("api_key", key["id"])
    assert event.changes["name"] == [None, "robot"]
    assert event.changes["prefix"] == [None, key["prefix"]]
    assert key["key"] not in json.dumps(event.changes)
    assert key["key"].split("_", 3)[3] not in json.dumps(event.changes)
    assert_by_user(event, owner)
    assert_from_request(event, created)
    event = only(by_key_events, "tenants.role.created")
    assert (event.actor_type, str(event.actor_id), event.actor_label) == (
        "api_key",
        key["id"],
        "robot",
    )
    assert_from_request(event, by_key, user_agent="robot/2")
    event = only(revoked_events, "accounts.api_key.revoked")
    assert_by_user(event, owner)
    assert_from_request(event, revoked)


# --- through the admin, as an operator -----------------------------------------------------------


def test_admin_actions_and_saves_are_recorded_as_the_operators(tenant, owner_agent, operator_agent):
    operator = operator_agent.operator
    with recorded(tenant) as suspended_events:
        suspended = operator_agent.post(
            f"{ADMIN}tenants/tenant/", {"action": "suspend", "_selected_action": [str(tenant.id)]}
        )
    with recorded(tenant) as reactivated_events:
        operator_agent.post(
            f"{ADMIN}tenants/tenant/",
            {"action": "reactivate", "_selected_action": [str(tenant.id)]},
        )
    with outcome():
        enterprise = Plan.objects.get(code="enterprise")
        membership = Membership.objects.get(tenant=tenant)
    with recorded(tenant) as saved_events:
        saved = operator_agent.post(
            f"{ADMIN}tenants/tenant/{tenant.id}/change/",
            {
                "name": "Acme Renamed",
                "slug": tenant.slug,
                "status": "active",
                "plan": enterprise.pk,
                "settings": "{}",
                # The read-only memberships inline, as the page sends it back.
                "-1-TOTAL_FORMS": "1",
                "-1-INITIAL_FORMS": "1",
                "-1-0-id": str(membership.pk),
                "-1-0-tenant": str(tenant.pk),
            },
        )
    key = owner_agent.post(KEYS, {"name": "k", "permissions": [Perm.CATALOG_READ]}).json()
    with recorded(tenant) as revoked_events:
        operator_agent.post(
            f"{ADMIN}accounts/apikey/", {"action": "revoke", "_selected_action": [key["id"]]}
        )

    assert suspended.status_code == 302
    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert only(suspended_events, "tenants.tenant.suspended").changes == {
        "status": ["active", "suspended"]
    }
    assert only(reactivated_events, "tenants.tenant.reactivated").changes == {
        "status": ["suspended", "active"]
    }
    assert sorted(event.action for event in saved_events) == [
        "tenants.tenant.plan_changed",
        "tenants.tenant.updated",
    ]
    by_action = {event.action: event for event in saved_events}
    assert by_action["tenants.tenant.plan_changed"].changes == {"plan": ["pro", "enterprise"]}
    assert by_action["tenants.tenant.updated"].changes == {"name": ["Acme", "Acme Renamed"]}
    assert only(revoked_events, "accounts.api_key.revoked").target_id == key["id"]
    for event in (*suspended_events, *reactivated_events, *saved_events, *revoked_events):
        assert (event.actor_type, event.actor_id, event.actor_label) == (
            "operator",
            operator.pk,
            "ops@example.com",
        )
        assert event.ip == "127.0.0.1"
        assert event.user_agent == USER_AGENT
        assert event.request_id


# --- the same transaction ------------------------------------------------------------------------


def test_a_change_that_fails_after_its_event_leaves_neither(tenant, owner_agent, monkeypatch):
    # Given a role, and a failure that strikes after the event of its update is recorded
    role = make_role(tenant, name="ops", permissions=[Perm.CATALOG_READ])

    def fail(tenant_id):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(role_services, "access_changed", fail)

    # When it is updated
    with recorded(tenant) as new:
        response = owner_agent.patch(f"{ROLES}{role.pk}/", {"name": "renamed"})

    # Then the request fails, and neither the change nor its event was kept
    assert_problem(response, 500, "internal-error")
    assert new == []
    with outcome():
        assert Role.objects.get(pk=role.pk).name == "ops"


def test_an_event_that_cannot_be_written_undoes_its_change(tenant, owner_agent, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise DatabaseError("the audit table is unavailable")

    monkeypatch.setattr(AuditEvent, "save", refuse)

    response = owner_agent.post(ROLES, {"name": "ghost", "permissions": []})

    assert_problem(response, 500, "internal-error")
    with outcome():
        assert not Role.objects.filter(tenant=tenant, name="ghost").exists()


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    # Outside a test transaction: nothing here is in one unless it opens it.
    tenant = make_tenant()

    with tenant_context(tenant.id), pytest.raises(audit.AuditOutsideTransaction):
        audit.record(tenant_id=tenant.id, action="tests.thing.done", target_type="thing")

    assert [event.action for event in events_of(tenant)] == ["tenants.tenant.created"]


@pytest.mark.parametrize("action", ["catalog.product.renamed", "tests.thing", "Catalog.X.y"])
def test_an_action_no_app_registered_is_refused_and_nothing_is_recorded(action):
    # Each app registers its actions (an enum); a typo is refused when it is written.
    tenant = make_tenant()

    with (
        operator_scope("test: a typo"),
        pytest.raises(ValueError, match="registered"),
        transaction.atomic(),
    ):
        audit.record(tenant_id=tenant.id, action=action, target_type="thing")

    assert [event.action for event in events_of(tenant)] == ["tenants.tenant.created"]


def test_every_action_the_apps_record_is_registered():
    # The apps' enums, as their ready() registered them; the values are what the log stores.
    assert {"tenants.tenant.created", "accounts.api_key.revoked", "catalog.import.started"} <= (
        audit.registered_actions()
    )
    with pytest.raises(ValueError, match=r"<app>\.<entity>\.<verb>"):
        audit.register_actions(StrEnum("Bad", {"BAD": "not-an-action"}))


# --- reading the log -----------------------------------------------------------------------------


def test_the_log_needs_audit_read(tenant):
    viewer = client_as(make_member(tenant, roles=["viewer"]).user, tenant)
    event = add_event(tenant)

    assert_problem(viewer.get(EVENTS), 403, "permission-denied")
    assert_problem(viewer.get(f"{EVENTS}{event.id}/"), 403, "permission-denied")
    assert_problem(APIClient().get(EVENTS), 401, "not-authenticated")


def test_the_log_shows_the_callers_tenant_only(tenant, owner_agent):
    other = make_tenant(name="Other")
    foreign = add_event(other, action="tests.secret.kept")
    mine = add_event(tenant, action="tests.thing.done")

    listed = owner_agent.get(EVENTS, {"page_size": 100}).json()["results"]

    ids = {item["id"] for item in listed}
    assert str(mine.id) in ids
    assert str(foreign.id) not in ids
    assert {item["action"] for item in listed}.isdisjoint({"tests.secret.kept"})
    assert_problem(owner_agent.get(f"{EVENTS}{foreign.id}/"), 404, "not-found")
    assert owner_agent.get(f"{EVENTS}{mine.id}/").json()["action"] == "tests.thing.done"


def test_the_log_is_newest_first_and_cursor_paginated(tenant, owner_agent):
    made = [add_event(tenant, action=f"tests.step.n{n}") for n in range(5)]

    first = owner_agent.get(EVENTS, {"page_size": 2, "action": "tests.step.*"}).json()
    second = owner_agent.get(first["next"]).json()
    third = owner_agent.get(second["next"]).json()

    pages = [first, second, third]
    walked = [item["id"] for page in pages for item in page["results"]]
    assert walked == [str(event.id) for event in reversed(made)]
    assert [len(page["results"]) for page in pages] == [2, 2, 1]
    assert third["next"] is None
    assert set(first["results"][0]) == {
        "id",
        "actor_type",
        "actor_id",
        "actor_label",
        "actor_app_id",
        "actor_app_label",
        "action",
        "target_type",
        "target_id",
        "changes",
        "request_id",
        "ip",
        "user_agent",
        "created_at",
        "prev_hash",
        "hash",
    }


def test_the_log_filters(tenant, owner, owner_agent):
    member = make_member(tenant, roles=["viewer"])
    viewer_role = role_id(tenant, "viewer")
    owner_agent.patch(f"{MEMBERS}{member.pk}/", {"roles": [role_id(tenant, "editor")]})
    owner_agent.patch(f"{MEMBERS}{member.pk}/", {"roles": [viewer_role]})
    owner_agent.post(ROLES, {"name": "extra", "permissions": []})
    old = add_event(tenant, action="tests.old.thing", days_ago=10)
    system = add_event(tenant, action="tests.system.thing")

    def actions(**params) -> list[str]:
        response = owner_agent.get(EVENTS, {"page_size": 100, **params})
        assert response.status_code == 200, response.content
        return [item["action"] for item in response.json()["results"]]

    member_events = ["tenants.member.roles_changed"] * 2
    assert actions(action="tenants.member.*") == member_events
    assert actions(action="tenants.member.roles_changed") == member_events
    assert actions(action="tenants.*")[:3] == ["tenants.role.created", *member_events]
    assert actions(target_type="member", target_id=str(member.pk)) == member_events
    assert "tenants.role.created" in actions(actor_id=str(owner.pk), actor_type="user")
    assert "tests.system.thing" not in actions(actor_id=str(owner.pk))
    assert set(actions(actor_type="system")) == {
        "tenants.tenant.created",  # by make_tenant, as a command would
        old.action,
        system.action,
    }
    assert "tests.old.thing" not in actions(since=(timezone.now() - timedelta(days=1)).isoformat())
    assert actions(until=(old.created_at + timedelta(seconds=1)).isoformat()) == [old.action]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01T00:00:00Z"}, "until"),
        ({"actor_id": "not-a-uuid"}, "actor_id"),
        ({"actor_type": "robot"}, "actor_type"),
        ({"action": "DROP TABLE"}, "action"),
        ({"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "until"),
    ],
)
def test_bad_filters_are_400_problems(tenant, owner_agent, params, field):
    response = owner_agent.get(EVENTS, params)

    body = assert_problem(response, 400, "validation-error")
    assert {error["field"] for error in body["errors"]} == {field}


def test_a_key_with_audit_read_reads_the_log(tenant, owner_agent):
    key = owner_agent.post(KEYS, {"name": "siem", "permissions": [Perm.AUDIT_READ]}).json()
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key['key']}")

    response = machine.get(EVENTS, {"action": "accounts.api_key.*"})

    assert response.status_code == 200, response.content
    assert [item["target_id"] for item in response.json()["results"]] == [key["id"]]


# --- nothing changes an event --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_api_has_no_way_to_change_the_log(tenant, owner_agent, method):
    event = add_event(tenant)

    for url in (EVENTS, f"{EVENTS}{event.id}/"):
        response = getattr(owner_agent, method)(url, {"action": "tests.thing.undone"})
        assert_problem(response, 405, "method-not-allowed")
        assert "GET" in response["Allow"]
    with outcome():
        assert AuditEvent.objects.get(pk=event.id).action == "tests.thing.done"


def test_the_admin_shows_the_log_and_changes_nothing(tenant, operator_agent):
    event = add_event(tenant, action="tests.admin.seen")
    base = f"{ADMIN}tenants/auditevent/"

    changelist = operator_agent.get(base)
    page = operator_agent.get(f"{base}{event.id}/change/")
    add = operator_agent.get(f"{base}add/")
    change = operator_agent.post(f"{base}{event.id}/change/", {"action": "tests.admin.forged"})
    delete = operator_agent.post(f"{base}{event.id}/delete/", {"post": "yes"})
    bulk = operator_agent.post(base, {"action": "delete_selected", "_selected_action": [event.id]})

    assert changelist.status_code == 200
    assert "tests.admin.seen" in changelist.content.decode()
    assert "delete_selected" not in changelist.content.decode()
    assert page.status_code == 200
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert bulk.status_code in (200, 302)
    with outcome():
        assert AuditEvent.objects.get(pk=event.id).action == "tests.admin.seen"


def test_the_orm_refuses_to_change_or_delete_an_event(tenant):
    event = add_event(tenant)

    with operator_scope("test"):
        assert_the_orm_refuses_to_change(AuditEvent, event.id)

    with outcome():
        assert AuditEvent.objects.get(pk=event.id).action == "tests.thing.done"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE tenants_auditevent SET action = 'tests.thing.undone'",
        "DELETE FROM tenants_auditevent",
    ],
)
@pytest.mark.parametrize("role", ["application", "schema owner"])
def test_the_database_refuses_raw_updates_and_deletes(tenant, statement, role):
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    event = add_event(tenant)

    with operator_scope("test"):
        assert_the_database_refuses(statement, as_schema_owner=role == "schema owner")

    with outcome():
        assert AuditEvent.objects.get(pk=event.id).action == "tests.thing.done"


def test_the_prune_flag_is_no_key_for_the_application_role(tenant):
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only")
    event = add_event(tenant)

    # The flag the database functions set lets only the table's owner through.
    with operator_scope("test"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.audit_prune', 'on', true)")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            cursor.execute("DELETE FROM tenants_auditevent")

    with outcome():
        assert AuditEvent.objects.filter(pk=event.id).exists()


# --- retention -----------------------------------------------------------------------------------


def test_the_prune_job_deletes_only_events_past_retention(tenant):
    # The pro plan keeps a tenant's events two years, the free plan one
    # (tests/kernel/test_retention.py has the rest: tenants' own choices, plan changes).
    other = make_tenant(name="Other")
    old = [add_event(tenant, days_ago=731), add_event(other, days_ago=366)]
    kept = [add_event(tenant, days_ago=729), add_event(other, days_ago=364), add_event(tenant)]

    with tasks_run_inline():
        deleted = audit_prune_task.delay().get()

    with outcome():
        remaining = set(AuditEvent.objects.values_list("id", flat=True))
    assert deleted >= 2
    assert not remaining & {event.id for event in old}
    assert {event.id for event in kept} <= remaining


def test_the_database_never_prunes_the_last_day(tenant):
    if connection.vendor != "postgresql":
        pytest.skip("the guard is the database function's")
    event = add_event(tenant)

    with (
        operator_scope("test: the prune's own guard"),
        pytest.raises(DatabaseError, match="never pruned"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"SELECT {audit.PRUNE_TENANTS_FUNCTION}(%s::uuid[], %s::timestamptz[])",
            [[tenant.id], [timezone.now()]],
        )

    with outcome():
        assert AuditEvent.objects.filter(pk=event.id).exists()


def test_purging_a_deleted_tenant_takes_its_events_and_only_its(
    tenant, owner_agent, django_capture_on_commit_callbacks
):
    other = make_tenant(name="Other")
    add_event(tenant)
    theirs = add_event(other)

    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        assert owner_agent.delete(TENANT).status_code == 204

    with outcome():
        assert not Tenant.objects.filter(pk=tenant.pk).exists()
        assert not AuditEvent.objects.filter(tenant_id=tenant.id).exists()
        assert AuditEvent.objects.filter(pk=theirs.id).exists()
    if connection.vendor == "postgresql":
        # A live tenant's events cannot be purged, whoever asks.
        with (
            operator_scope("test"),
            pytest.raises(DatabaseError, match="deleted tenant"),
            transaction.atomic(),
        ):
            audit.purge_tenant_events(tenant_id=other.id)


def test_signing_in_writes_nothing(tenant, owner):
    with recorded(tenant) as new:
        response = agent().post(
            TOKEN, {"email": owner.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
        )

    assert response.status_code == 200
    assert new == []
