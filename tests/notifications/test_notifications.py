"""Notifications through REST: who receives an event, and reading one's own inbox."""

import asyncio
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connections, transaction
from django.utils import timezone

from kernel.context import tenant_context
from kernel.events import Event, publish
from notifications.realtime import user_group
from notifications.services import notifications_fan_out
from tests.factories import make_member, make_role, make_tenant
from tests.helpers import (
    assert_problem,
    backend_pid,
    client_for,
    member_with_role,
    owner_of,
    waiting_for_a_lock,
)

pytestmark = pytest.mark.django_db

NOTIFICATIONS = "/api/v1/notifications/"


@pytest.fixture
def shop():
    tenant = make_tenant(name="Shop")
    return tenant, owner_of(tenant)


def announce(tenant, topic="catalog.product.updated", actor=None, **data):
    """A domain event in `tenant`, published and fanned out as after a real commit."""
    with tenant_context(tenant.id):
        return publish(topic=topic, data=data or {"sku": "A-1"}, actor=actor)


@pytest.fixture
def fan_out(django_capture_on_commit_callbacks):
    """Run what publishing queues on commit (the dispatch task, the fan-out task) inline."""

    def run(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return announce(*args, **kwargs)

    return run


def inbox(client, query="") -> list[dict]:
    response = client.get(NOTIFICATIONS + query)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_every_member_with_the_permission_is_notified_but_the_actor(shop, fan_out):
    tenant, owner = shop
    viewer = member_with_role(tenant, "viewer")
    muted = make_member(tenant, roles=[make_role(tenant, permissions=["catalog.read"]).name]).user

    fan_out(tenant, actor=owner, sku="A-1")

    assert [n["topic"] for n in inbox(client_for(viewer, tenant))] == ["catalog.product.updated"]
    assert inbox(client_for(owner, tenant)) == []  # the one who acted
    response = client_for(muted, tenant).get(NOTIFICATIONS)
    assert_problem(response, 403, "permission-denied")  # no notifications.read at all


def test_a_catalog_event_reaches_only_members_who_may_read_the_catalog(shop, fan_out):
    # A finding of the source review: notifications.read alone exposed product data.
    tenant, owner = shop
    blind = make_role(tenant, name="notices-only", permissions=["notifications.read"])
    split = [
        make_role(tenant, name="hears", permissions=["notifications.read"]),
        make_role(tenant, name="reads", permissions=["catalog.read"]),
    ]
    without_catalog = make_member(tenant, roles=[blind.name]).user
    with_both_roles = make_member(tenant, roles=[role.name for role in split]).user

    fan_out(tenant, actor=owner, sku="A-1")

    assert inbox(client_for(without_catalog, tenant)) == []
    assert client_for(without_catalog, tenant).get(f"{NOTIFICATIONS}unread-count/").json() == {
        "count": 0
    }
    # Permissions add up across a member's roles
    assert [n["topic"] for n in inbox(client_for(with_both_roles, tenant))] == [
        "catalog.product.updated"
    ]


def test_notifications_stored_before_catalog_read_was_taken_away_are_hidden(
    shop, fan_out, django_capture_on_commit_callbacks
):
    tenant, owner = shop
    role = make_role(tenant, name="was-reader", permissions=["notifications.read", "catalog.read"])
    member = make_member(tenant, roles=[role.name]).user
    fan_out(tenant, actor=owner, sku="A-1")
    client = client_for(member, tenant)
    (stored,) = inbox(client)

    owner_client = client_for(owner, tenant)
    with django_capture_on_commit_callbacks(execute=True):  # the access change takes effect
        changed = owner_client.patch(
            f"/api/v1/roles/{role.pk}/", {"permissions": ["notifications.read"]}, format="json"
        )
    assert changed.status_code == 200, changed.content

    assert inbox(client) == []
    assert_problem(client.get(f"{NOTIFICATIONS}{stored['id']}/"), 404, "not-found")


def test_another_tenants_event_never_arrives(shop, fan_out):
    tenant, owner = shop
    other = make_tenant(name="Other")
    fan_out(other, sku="THEIRS")
    assert inbox(client_for(owner, tenant)) == []
    assert [n["data"] for n in inbox(client_for(owner_of(other), other))] == [{"sku": "THEIRS"}]


def test_a_retried_fan_out_notifies_once(shop, django_capture_on_commit_callbacks):
    tenant, owner = shop
    from kernel.events import Event
    from notifications.services import notifications_fan_out

    with django_capture_on_commit_callbacks(execute=True):
        event = announce(tenant, sku="ONCE")
    with tenant_context(tenant.id):
        assert notifications_fan_out(event=Event.from_message(event.as_message())) == 0
    assert len(inbox(client_for(owner, tenant))) == 1


@pytest.mark.django_db(transaction=True)
def test_two_fan_outs_of_one_event_at_once_push_each_notification_once():
    # Given an event of the tenant, and the channel a viewer's socket listens on
    tenant = make_tenant(name="Shop")
    viewer = member_with_role(tenant, "viewer")
    event = Event(
        id=str(uuid.uuid4()),
        topic="catalog.product.updated",
        data={"sku": "TWICE"},
        tenant_id=str(tenant.id),
        actor={},
        request_id=None,
        occurred_at=timezone.now().isoformat(),
    )
    layer = get_channel_layer()
    socket = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(tenant.id, viewer.id), socket)
    pids = {}

    def fan_out_again() -> None:
        try:
            with tenant_context(tenant.id):
                pids["second"] = backend_pid()
                notifications_fan_out(event=event)
        finally:
            connections.close_all()

    # When a second fan-out of the event (a retry, the outbox relay) runs while the first has
    # stored its notifications but not committed them yet
    with tenant_context(tenant.id), transaction.atomic():
        notifications_fan_out(event=event)
        second = threading.Thread(target=fan_out_again)
        second.start()
        deadline = time.monotonic() + 10
        while not waiting_for_a_lock(pids.get("second", -1)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert waiting_for_a_lock(pids["second"])  # behind the first
    second.join(10)

    # Then the viewer's socket gets the notification once, and the inbox holds it once
    pushes = _received(layer, socket)
    async_to_sync(layer.group_discard)(user_group(tenant.id, viewer.id), socket)
    assert [push["notification"]["data"] for push in pushes] == [{"sku": "TWICE"}]
    assert [n["id"] for n in inbox(client_for(viewer, tenant))] == [
        push["notification"]["id"] for push in pushes
    ]


def _received(layer, channel: str, *, quiet_seconds: float = 1.0) -> list[dict]:
    """What arrived on the channel, until nothing more arrives for `quiet_seconds`."""

    async def drain() -> list[dict]:
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), quiet_seconds))
            except TimeoutError:
                return messages

    return async_to_sync(drain)()


def test_preferences_choose_the_topics(shop, fan_out):
    tenant, owner = shop
    client = client_for(owner, tenant)
    assert client.get("/api/v1/notification-preferences/").json() == {"topics": None}
    response = client.put(
        "/api/v1/notification-preferences/", {"topics": ["catalog.import.*"]}, format="json"
    )
    assert response.json() == {"topics": ["catalog.import.*"]}

    fan_out(tenant, topic="catalog.product.updated")
    fan_out(tenant, topic="catalog.import.finished")

    assert [n["topic"] for n in inbox(client)] == ["catalog.import.finished"]
    client.put("/api/v1/notification-preferences/", {"topics": None}, format="json")
    fan_out(tenant, topic="catalog.product.updated")
    assert len(inbox(client)) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"topics": "catalog.*"},
        {"topics": [1]},
        {},
        {"topics": [""]},
        {"topics": ["catalog.product.*", "members.invited"]},
    ],
)
def test_bad_preferences_are_refused(shop, body):
    tenant, owner = shop
    response = client_for(owner, tenant).put(
        "/api/v1/notification-preferences/", body, format="json"
    )
    assert_problem(response, 400, "validation-error")


def test_read_unread_and_counts(shop, fan_out):
    tenant, owner = shop
    for sku in ("A", "B", "C"):
        fan_out(
            tenant, topic=f"catalog.product.{'updated' if sku != 'C' else 'low_stock'}", sku=sku
        )
    client = client_for(owner, tenant)
    newest_first = inbox(client)
    assert [n["data"]["sku"] for n in newest_first] == ["C", "B", "A"]
    assert client.get(NOTIFICATIONS + "unread-count/").json() == {"count": 3}

    read = client.post(f"{NOTIFICATIONS}{newest_first[0]['id']}/read/")
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    assert [n["data"]["sku"] for n in inbox(client, "?unread=true")] == ["B", "A"]
    assert [n["data"]["sku"] for n in inbox(client, "?topic=catalog.product.low_stock")] == ["C"]
    assert client.post(NOTIFICATIONS + "read-all/").json() == {"updated": 2}
    assert client.get(NOTIFICATIONS + "unread-count/").json() == {"count": 0}


def test_only_ones_own_notifications(shop, fan_out):
    tenant, owner = shop
    colleague = member_with_role(tenant, "viewer")
    fan_out(tenant, sku="X")
    mine = inbox(client_for(owner, tenant))[0]
    colleague_client = client_for(colleague, tenant)
    theirs = inbox(colleague_client)[0]
    assert mine["id"] != theirs["id"]
    # Someone else's notification, or one of another tenant, is not found.
    assert_problem(colleague_client.post(f"{NOTIFICATIONS}{mine['id']}/read/"), 404, "not-found")
    assert_problem(colleague_client.post(f"{NOTIFICATIONS}{uuid.uuid4()}/read/"), 404)
    assert colleague_client.post(f"{NOTIFICATIONS}not-a-uuid/read/").status_code == 404


def test_notifications_need_a_credential(api_client):
    assert_problem(api_client.get(NOTIFICATIONS), 401, "not-authenticated")


@pytest.mark.parametrize("query", ["?unread=maybe", "?page_size=abc", "?cursor=garbage"])
def test_bad_list_parameters_are_400(shop, query):
    tenant, owner = shop
    response = client_for(owner, tenant).get(NOTIFICATIONS + query)
    assert response.status_code == 400, response.content
