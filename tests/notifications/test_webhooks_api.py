"""Webhook endpoints and their deliveries through the API: who may manage them, the secret shown
once, the SSRF rules on `url`, the deliveries list and the redeliver action."""

import base64
import datetime
import re
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from kernel import outbound
from kernel.context import tenant_context
from kernel.events import Event
from kernel.permissions import Perm
from tests.factories import make_role, make_tenant
from tests.helpers import (
    API,
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    member_with_role,
    outcome,
    owner_of,
)
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.tenant(name="Acme"),
    pytest.mark.usefixtures("public_webhook_targets_only"),
]

WEBHOOKS = f"{API}/webhooks/"
# A public address written as a literal: accepted without any DNS lookup.
PUBLIC_URL = "https://93.184.215.14/hooks"
SECRET_FORMAT = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")


def endpoint_url(endpoint_id) -> str:
    return f"{WEBHOOKS}{endpoint_id}/"


def deliveries_url(endpoint_id) -> str:
    return f"{WEBHOOKS}{endpoint_id}/deliveries/"


def redeliver_url(endpoint_id, delivery_id) -> str:
    return f"{WEBHOOKS}{endpoint_id}/deliveries/{delivery_id}/redeliver/"


def endpoint_row(endpoint_id) -> WebhookEndpoint | None:
    with outcome():
        return WebhookEndpoint.objects.filter(pk=endpoint_id).first()


def event_for(tenant, topic: str = "catalog.product.updated") -> Event:
    return Event(
        id=uuid.uuid4().hex,
        topic=topic,
        data={"id": str(uuid.uuid4()), "changed": ["price"]},
        tenant_id=str(tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=datetime.datetime.now(tz=datetime.UTC).isoformat(),
    )


def deliveries_for(tenant, *events: Event) -> list[WebhookDelivery]:
    """Deliveries as the fan-out makes them; their tasks (queued on commit) are never sent here,
    since the test's transaction does not commit."""
    with tenant_context(tenant.id):
        return [
            delivery
            for event in events
            for delivery in services.webhook_deliveries_create_for_event(event=event)
        ]


def set_status(delivery: WebhookDelivery, status: str) -> None:
    with outcome():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status)


@pytest.fixture
def endpoint(admin_client) -> dict:
    response = admin_client.post(
        WEBHOOKS, {"url": PUBLIC_URL, "topics": ["catalog.product.*"]}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


# --- who may ----------------------------------------------------------------------------------

ROUTES = [
    ("get", "list"),
    ("post", "list"),
    ("get", "detail"),
    ("put", "detail"),
    ("patch", "detail"),
    ("delete", "detail"),
    ("get", "deliveries"),
    ("post", "redeliver"),
]


def route(kind: str, endpoint_id, delivery_id) -> str:
    return {
        "list": WEBHOOKS,
        "detail": endpoint_url(endpoint_id),
        "deliveries": deliveries_url(endpoint_id),
        "redeliver": redeliver_url(endpoint_id, delivery_id),
    }[kind]


@pytest.mark.parametrize(("method", "kind"), ROUTES)
def test_every_route_needs_a_credential(api_client, tenant, endpoint, method, kind):
    url = route(kind, endpoint["id"], uuid.uuid4())
    response = getattr(api_client, method)(url, {"url": PUBLIC_URL, "topics": ["*"]})
    assert_problem(response, 401, "not-authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "kind"), ROUTES)
@pytest.mark.parametrize("role", ["viewer", "editor", "catalog-manager"])
def test_every_route_needs_webhooks_manage(tenant, endpoint, method, kind, role):
    # Given members whose roles hold much, but not webhooks.manage
    make_role(
        tenant,
        name="catalog-manager",
        permissions=[p for p in Perm if p != Perm.WEBHOOKS_MANAGE],
    )
    client = client_for(member_with_role(tenant, role), tenant)
    url = route(kind, endpoint["id"], uuid.uuid4())

    # When they call the route, Then it is refused, and nothing changed
    response = getattr(client, method)(url, {"url": PUBLIC_URL, "topics": ["*"]})
    assert_problem(response, 403, "permission-denied")
    assert endpoint_row(endpoint["id"]) is not None


def test_a_role_with_webhooks_manage_may_manage_them_for_what_it_may_read(tenant):
    # webhooks.manage, and catalog.read and audit.read for the catalog's events and the audit
    # log's (`audit.event`) that `*` sends out
    make_role(
        tenant,
        name="integrations",
        permissions=[Perm.WEBHOOKS_MANAGE, Perm.CATALOG_READ, Perm.AUDIT_READ],
    )
    client = client_for(member_with_role(tenant, "integrations"), tenant)

    created = client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": ["*"]})

    assert created.status_code == 201, created.content
    assert client.get(WEBHOOKS).status_code == 200


@pytest.mark.parametrize("topic", ["*", "catalog.*", "catalog.product.updated"])
def test_webhooks_manage_alone_cannot_send_out_catalog_events(tenant, topic):
    # A finding of the source review: webhooks.manage alone read product data through the
    # deliveries. An endpoint sends its topics' data out: it needs their read permission too.
    make_role(tenant, name="integrations", permissions=[Perm.WEBHOOKS_MANAGE])
    client = client_for(member_with_role(tenant, "integrations"), tenant)

    created = client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": [topic]}, format="json")

    body = assert_problem(created, 403, "permission-denied")
    assert "catalog.read" in body["detail"]
    assert client.get(WEBHOOKS).json()["results"] == []


def test_deliveries_of_topics_the_caller_may_not_read_are_not_listed(tenant, endpoint):
    # Given a delivery of a catalog event, and a key that manages webhooks but may not read the
    # catalog
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    set_status(delivery, WebhookDelivery.Status.DEAD)
    owner = client_for(owner_of(tenant), tenant)
    key = owner.post(
        f"{API}/api-keys/",
        {"name": "hooks", "permissions": [Perm.WEBHOOKS_MANAGE]},
        format="json",
    ).json()["key"]
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")

    # Then it sees the endpoint, but neither the delivery nor its payload, nor can redeliver it
    assert machine.get(endpoint_url(endpoint["id"])).status_code == 200
    assert machine.get(deliveries_url(endpoint["id"])).json()["results"] == []
    assert_problem(machine.post(redeliver_url(endpoint["id"], delivery.pk)), 404, "not-found")
    # While the owner, who reads the catalog, sees it
    assert [d["id"] for d in owner.get(deliveries_url(endpoint["id"])).json()["results"]] == [
        str(delivery.pk)
    ]


def test_another_tenants_endpoint_and_deliveries_are_not_found(tenant, endpoint):
    # Given an endpoint with a delivery in Acme, and an admin of another tenant
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    other = make_tenant(name="Globex")
    client = client_for(member_with_role(other, "admin"), other)

    # Then every method on Acme's endpoint, its deliveries and the redeliver action is a 404
    body = {"url": PUBLIC_URL, "topics": ["*"]}
    assert_not_found_for_every_method(
        client, endpoint_url(endpoint["id"]), {"put": body, "patch": body, "delete": {}}
    )
    assert_problem(client.get(deliveries_url(endpoint["id"])), 404, "not-found")
    set_status(delivery, WebhookDelivery.Status.DEAD)
    assert_problem(client.post(redeliver_url(endpoint["id"], delivery.pk)), 404, "not-found")
    # ...and nothing of Acme's shows in Globex's list, or changed
    assert client.get(WEBHOOKS).json()["results"] == []
    assert endpoint_row(endpoint["id"]).url == PUBLIC_URL
    with outcome():
        assert WebhookDelivery.objects.get(pk=delivery.pk).status == WebhookDelivery.Status.DEAD


def test_a_delivery_is_found_only_under_its_own_endpoint(tenant, admin_client, endpoint):
    # Given two endpoints of the same tenant with a delivery each, and another tenant's
    second = admin_client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": ["*"]}).json()
    by_endpoint = {str(d.endpoint_id): d for d in deliveries_for(tenant, event_for(tenant))}
    delivery = by_endpoint[endpoint["id"]]
    set_status(delivery, WebhookDelivery.Status.DEAD)
    other = make_tenant(name="Globex")
    with tenant_context(other.id):
        foreign = services.webhook_endpoint_create(url=PUBLIC_URL, topics=["*"])
    (foreign_delivery,) = deliveries_for(other, event_for(other))
    set_status(foreign_delivery, WebhookDelivery.Status.DEAD)

    # Then redelivering it under the other endpoint, or another tenant's under ours, is a 404
    assert_problem(admin_client.post(redeliver_url(second["id"], delivery.pk)), 404, "not-found")
    response = admin_client.post(redeliver_url(endpoint["id"], foreign_delivery.pk))
    assert_problem(response, 404, "not-found")
    assert_problem(admin_client.get(deliveries_url(foreign.pk)), 404, "not-found")
    # ...and each endpoint lists its own delivery only
    listed = admin_client.get(deliveries_url(second["id"])).json()["results"]
    assert [d["id"] for d in listed] == [str(by_endpoint[second["id"]].pk)]


# --- create, read, update, delete ------------------------------------------------------------


def test_create_shows_the_secret_once(admin_client):
    # When an endpoint is created
    response = admin_client.post(
        WEBHOOKS,
        {"url": PUBLIC_URL, "topics": ["catalog.product.*", "catalog.import.finished"]},
        format="json",
    )

    # Then the answer holds the endpoint and its secret, 32 random bytes, and is not cached
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"].endswith(endpoint_url(body["id"]))
    assert response["Cache-Control"] == "no-store"
    assert SECRET_FORMAT.match(body["secret"]), body["secret"]
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert body == {
        "id": body["id"],
        "url": PUBLIC_URL,
        "topics": ["catalog.product.*", "catalog.import.finished"],
        "is_active": True,
        "circuit_state": "closed",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
        "secret": body["secret"],
    }
    assert endpoint_row(body["id"]).secret == body["secret"]

    # And no other answer ever shows it again
    shown = [
        admin_client.get(endpoint_url(body["id"])).json(),
        *admin_client.get(WEBHOOKS).json()["results"],
        admin_client.patch(endpoint_url(body["id"]), {"is_active": False}).json(),
        admin_client.put(endpoint_url(body["id"]), {"url": PUBLIC_URL, "topics": ["*"]}).json(),
    ]
    for answer in shown:
        assert "secret" not in answer, answer
        assert body["secret"] not in str(answer)


def test_every_endpoint_gets_its_own_secret(admin_client):
    secrets = {
        admin_client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": ["*"]}).json()["secret"]
        for _ in range(3)
    }
    assert len(secrets) == 3


def test_list_is_cursor_paginated_newest_first(admin_client):
    ids = [
        admin_client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": ["*"]}).json()["id"]
        for _ in range(3)
    ]

    first = admin_client.get(WEBHOOKS, {"page_size": 2}).json()
    second = admin_client.get(first["next"]).json()

    assert [e["id"] for e in first["results"] + second["results"]] == ids[::-1]
    assert second["next"] is None
    assert first["previous"] is None


def test_put_replaces_and_patch_changes_only_what_it_names(admin_client, endpoint):
    url = endpoint_url(endpoint["id"])

    patched = admin_client.patch(url, {"is_active": False}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["is_active"] is False
    assert patched.json()["topics"] == ["catalog.product.*"]

    put = admin_client.put(
        url,
        {"url": "https://93.184.215.15/other", "topics": ["catalog.import.*", "catalog.import.*"]},
        format="json",
    )
    assert put.status_code == 200, put.content
    # PUT resets what it leaves out to its default; repeated topics are kept once
    assert put.json()["is_active"] is True
    assert put.json()["topics"] == ["catalog.import.*"]
    assert put.json()["url"] == "https://93.184.215.15/other"
    row = endpoint_row(endpoint["id"])
    assert (row.url, row.topics, row.is_active) == (
        "https://93.184.215.15/other",
        ["catalog.import.*"],
        True,
    )


def test_a_new_url_closes_an_open_breaker(admin_client, endpoint):
    with outcome():
        WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(
            consecutive_failures=9,
            circuit_open_until=datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(hours=1),
        )
    assert admin_client.get(endpoint_url(endpoint["id"])).json()["circuit_state"] == "open"

    response = admin_client.patch(endpoint_url(endpoint["id"]), {"url": "https://93.184.215.15/"})

    assert response.json()["circuit_state"] == "closed"
    assert endpoint_row(endpoint["id"]).consecutive_failures == 0


def test_delete_removes_the_endpoint_and_its_deliveries(tenant, admin_client, endpoint):
    deliveries_for(tenant, event_for(tenant))

    response = admin_client.delete(endpoint_url(endpoint["id"]))

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(admin_client.get(endpoint_url(endpoint["id"])), 404, "not-found")
    with outcome():
        assert not WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"topics": ["*"]}, {"url"}),
        ({"url": PUBLIC_URL}, {"topics"}),
        ({"url": PUBLIC_URL, "topics": []}, {"topics"}),
        ({"url": PUBLIC_URL, "topics": ["Catalog Product"]}, {"topics"}),
        ({"url": PUBLIC_URL, "topics": ["catalog..product"]}, {"topics"}),
        ({"url": PUBLIC_URL, "topics": "catalog.product.*"}, {"topics"}),
        ({"url": PUBLIC_URL, "topics": ["x"] * 51}, {"topics"}),
        ({"url": "https://93.184.215.14/" + "a" * 2048, "topics": ["*"]}, {"url"}),
    ],
)
def test_invalid_input_is_a_field_error(admin_client, body, fields):
    response = admin_client.post(WEBHOOKS, body, format="json")

    assert error_fields(response) == fields
    assert admin_client.get(WEBHOOKS).json()["results"] == []


@pytest.mark.parametrize("topic", ["members.*", "catalog.product.renamed", "catalog.*.nothing"])
def test_a_topic_no_event_has_is_refused_and_the_known_ones_are_named(admin_client, topic):
    response = admin_client.post(
        WEBHOOKS, {"url": PUBLIC_URL, "topics": ["catalog.product.*", topic]}, format="json"
    )

    body = assert_problem(response, 400, "validation-error")
    assert error_fields(response) == {"topics"}
    assert topic in str(body)
    assert "catalog.product.updated" in str(body)
    assert admin_client.get(WEBHOOKS).json()["results"] == []


def test_the_tenant_cannot_be_chosen_in_the_body(tenant, admin_client):
    other = make_tenant(name="Globex")

    response = admin_client.post(
        WEBHOOKS,
        {"url": PUBLIC_URL, "topics": ["*"], "tenant": str(other.id), "secret": "whsec_AAAA"},
        format="json",
    )

    assert response.status_code == 201
    row = endpoint_row(response.json()["id"])
    assert row.tenant_id == tenant.id
    assert row.secret == response.json()["secret"] != "whsec_AAAA"


# --- SSRF: which URLs are refused -------------------------------------------------------------

REFUSED_URLS = [
    "http://93.184.215.14/hooks",  # plain http
    "ftp://93.184.215.14/hooks",
    "javascript:alert(1)",
    "https://",
    "not a url",
    "https://exa mple.com/",
    "https://user:password@93.184.215.14/",
    "https://trusted.example@10.0.0.1/",  # the real host is after the @
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/hooks",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://hooks.localhost/",
    "https://0.0.0.0/",
    "https://10.1.2.3/",
    "https://172.16.0.10/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",  # shared address space (CGNAT)
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://169.254.10.10/",  # link-local
    "https://100.100.100.200/",  # Alibaba's metadata
    "https://224.0.0.1/",  # multicast
    "https://240.0.0.1/",  # reserved
    "https://[::1]/",
    "https://[::]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, IPv4-mapped
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[fd00:ec2::254]/",  # AWS metadata over IPv6
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "https://[ff02::1]/",
    "https://2130706433/",  # 127.0.0.1 in decimal
    "https://0x7f000001/",  # ...in hex
    "https://017700000001/",  # ...in octal
    "https://127.1/",
    "https://0x7f.1/",
    "https://3232235777/",  # 192.168.1.1 in decimal
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_private_and_local_targets_are_refused(admin_client, endpoint, url):
    created = admin_client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")
    changed = admin_client.patch(endpoint_url(endpoint["id"]), {"url": url}, format="json")

    assert error_fields(created) == {"url"}
    assert error_fields(changed) == {"url"}
    assert endpoint_row(endpoint["id"]).url == PUBLIC_URL
    assert [e["id"] for e in admin_client.get(WEBHOOKS).json()["results"]] == [endpoint["id"]]


@pytest.mark.parametrize(
    "addresses",
    [
        ("10.0.0.7",),
        ("127.0.0.1",),
        ("169.254.169.254",),
        ("fd00:ec2::254",),
        # Every record counts: one private address among public ones is enough to refuse.
        ("93.184.215.14", "10.0.0.7"),
        ("2606:2800:220:1:248:1893:25c8:1946", "::1"),
        (),  # does not resolve at all
    ],
)
def test_a_name_is_judged_by_every_address_it_resolves_to(admin_client, fake_dns, addresses):
    fake_dns["hooks.example.com"] = addresses

    response = admin_client.post(
        WEBHOOKS, {"url": "https://hooks.example.com/in", "topics": ["*"]}, format="json"
    )

    assert error_fields(response) == {"url"}
    # One answer whatever the addresses, naming none: no map of our internal DNS for tenants
    (error,) = response.json()["errors"]
    assert error["message"] == outbound.NOT_PUBLIC
    assert "does not resolve, or resolves to an address that is not public" in error["message"]


@pytest.mark.parametrize(
    "url",
    [
        PUBLIC_URL,
        "https://93.184.215.14:8443/hooks?source=tenantapi",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hooks",
        "https://hooks.example.com/in",
    ],
)
def test_public_targets_are_accepted(admin_client, fake_dns, url):
    fake_dns["hooks.example.com"] = ("93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946")

    response = admin_client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["url"] == url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/hooks", "http://localhost:8000/", "https://10.0.0.1/", "http://[::1]/"],
)
def test_private_targets_are_accepted_when_the_setting_allows_them(admin_client, settings, url):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True

    response = admin_client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")

    assert response.status_code == 201, response.content


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "https://user:pw@127.0.0.1/", "http://"])
def test_the_setting_does_not_allow_other_schemes_or_credentials(admin_client, settings, url):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True

    response = admin_client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")

    assert error_fields(response) == {"url"}


# --- deliveries ------------------------------------------------------------------------------


def test_deliveries_are_listed_newest_first_and_filtered_by_status(tenant, admin_client, endpoint):
    # Given three deliveries to the endpoint, one of them dead
    events = [event_for(tenant) for _ in range(3)]
    first, second, third = deliveries_for(tenant, *events)
    set_status(second, WebhookDelivery.Status.DEAD)

    everything = admin_client.get(deliveries_url(endpoint["id"]), {"page_size": 2})
    rest = admin_client.get(everything.json()["next"])
    dead = admin_client.get(deliveries_url(endpoint["id"]), {"status": "dead"})

    assert everything.status_code == 200, everything.content
    listed = everything.json()["results"] + rest.json()["results"]
    assert [d["id"] for d in listed] == [str(third.pk), str(second.pk), str(first.pk)]
    assert [d["id"] for d in dead.json()["results"]] == [str(second.pk)]
    shown = listed[-1]
    assert shown == {
        "id": str(first.pk),
        "endpoint": endpoint["id"],
        "webhook_id": events[0].id,
        "topic": "catalog.product.updated",
        "payload": {
            "type": "catalog.product.updated",
            "timestamp": shown["payload"]["timestamp"],
            "data": events[0].data,
        },
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": shown["next_attempt_at"],
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": "",
        "created_at": shown["created_at"],
        "delivered_at": None,
    }
    assert shown["payload"]["timestamp"].endswith("Z")
    assert shown["next_attempt_at"] is not None  # due at once


def test_an_unknown_status_filter_is_a_400(admin_client, endpoint):
    response = admin_client.get(deliveries_url(endpoint["id"]), {"status": "lost"})

    assert error_fields(response) == {"status"}


def test_redeliver_requeues_a_dead_delivery_with_its_attempts_reset(
    tenant, admin_client, endpoint, django_capture_on_commit_callbacks
):
    # Given a delivery that was given up on
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    with outcome():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.DEAD,
            attempts=8,
            last_status_code=500,
            last_error="HTTP 500.",
        )

    # When it is redelivered
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(redeliver_url(endpoint["id"], delivery.pk))

    # Then it is pending again, with no attempts, and one delivery task is queued on commit
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["attempts"]) == (str(delivery.pk), "pending", 0)
    assert (body["last_status_code"], body["last_error"]) == (None, "")
    assert len(callbacks) == 1


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_a_delivery_still_being_retried_cannot_be_redelivered(
    tenant, admin_client, endpoint, status, django_capture_on_commit_callbacks
):
    # Given a delivery whose next attempt is late, but not so late that its task must be lost
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    with outcome():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status, next_attempt_at=timezone.now() - datetime.timedelta(minutes=14)
        )

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(redeliver_url(endpoint["id"], delivery.pk))

    assert_problem(response, 409, "conflict")
    assert callbacks == []
    with outcome():
        assert WebhookDelivery.objects.get(pk=delivery.pk).status == status


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_a_delivery_whose_task_is_long_overdue_can_be_redelivered(
    tenant, admin_client, endpoint, status, django_capture_on_commit_callbacks
):
    # Given a delivery whose attempt was due 16 minutes ago and never happened (its task lost)
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    with outcome():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            attempts=1,
            next_attempt_at=timezone.now() - datetime.timedelta(minutes=16),
        )

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(redeliver_url(endpoint["id"], delivery.pk))

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["attempts"]) == ("pending", 0)
    assert len(callbacks) == 1


def test_a_disabled_endpoints_delivery_cannot_be_redelivered(tenant, admin_client, endpoint):
    (delivery,) = deliveries_for(tenant, event_for(tenant))
    set_status(delivery, WebhookDelivery.Status.DEAD)
    admin_client.patch(endpoint_url(endpoint["id"]), {"is_active": False})

    response = admin_client.post(redeliver_url(endpoint["id"], delivery.pk))

    assert_problem(response, 409, "conflict")
    with outcome():
        assert WebhookDelivery.objects.get(pk=delivery.pk).status == WebhookDelivery.Status.DEAD


def test_an_unknown_delivery_is_a_404(admin_client, endpoint):
    response = admin_client.post(redeliver_url(endpoint["id"], uuid.uuid4()))

    assert_problem(response, 404, "not-found")


def test_every_change_to_an_endpoint_is_audited_without_its_secret(tenant, admin_client):
    # A finding of the source review: the tenant's data-egress channel changed unrecorded.
    created = admin_client.post(
        WEBHOOKS, {"url": PUBLIC_URL, "topics": ["catalog.product.*"]}, format="json"
    ).json()
    url = endpoint_url(created["id"])
    admin_client.patch(url, {"topics": ["catalog.import.*"]}, format="json")
    (delivery,) = deliveries_for(tenant, event_for(tenant, topic="catalog.import.finished"))
    set_status(delivery, WebhookDelivery.Status.DEAD)
    assert admin_client.post(redeliver_url(created["id"], delivery.pk)).status_code == 200
    assert admin_client.delete(url).status_code == 204

    events = admin_client.get(f"{API}/audit-events/", {"action": "notifications.*"}).json()
    by_action = {event["action"]: event for event in events["results"]}

    assert set(by_action) == {
        "notifications.webhook.created",
        "notifications.webhook.updated",
        "notifications.webhook_delivery.redelivered",
        "notifications.webhook.deleted",
    }
    assert by_action["notifications.webhook.created"]["changes"]["url"] == [None, PUBLIC_URL]
    assert by_action["notifications.webhook.updated"]["changes"] == {
        "topics": [["catalog.product.*"], ["catalog.import.*"]]
    }
    assert by_action["notifications.webhook.deleted"]["target_id"] == created["id"]
    assert created["secret"] not in str(events)
