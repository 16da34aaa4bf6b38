"""Notifications over WebSockets, end to end: real uvicorn processes, a real Celery worker,
Redis as broker and channel layer, a real WebSocket client."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kernel.context import tenant_context
from kernel.events import publish
from tests.factories import make_tenant
from tests.fixtures.servers import server_environment, start_live_asgi_server
from tests.helpers import client_for, member_with_role, owner_of, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/v1/notifications/"
TIMEOUT = 20


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Two server processes sharing the database and the Redis channel layer."""
    started = [
        start_live_asgi_server(tmp_path_factory.mktemp("uvicorn"), server_environment())
        for _ in range(2)
    ]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def alpha(api_client):
    tenant = make_tenant(name="Alpha", plan_code="enterprise")
    reader = member_with_role(tenant, "viewer")
    return tenant, owner_of(tenant), reader


def token_for(client, user, tenant) -> str:
    return sign_in(client, user, tenant)["access"]


@contextmanager
def open_socket(server, token) -> Iterator[ClientConnection]:
    """An authenticated socket, closed on leaving the block (websockets wants `connect()` used
    as a context manager)."""
    with connect(f"{server.ws_url}{PATH}?token={token}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        yield socket


def receive(socket) -> dict:
    return json.loads(socket.recv(timeout=TIMEOUT))


def request(socket, message: dict) -> dict:
    socket.send(json.dumps(message))
    return receive(socket)


def announce(tenant, topic="catalog.product.updated", **data):
    with tenant_context(tenant.id):
        return publish(topic=topic, data=data)


def test_a_product_update_reaches_the_tenants_sockets_on_every_process_and_no_other_tenant(
    servers, alpha, api_client, celery_worker
):
    tenant, owner, reader = alpha
    editor = member_with_role(tenant, "editor")
    other = make_tenant(name="Beta")
    first, second = servers
    editor_client = client_for(editor, tenant)
    created = editor_client.post(
        "/api/v1/products/",
        {"sku": "WS-1", "name": "Lamp", "price": "9.99", "currency": "EUR", "stock": 10},
        format="json",
    )
    assert created.status_code == 201, created.content
    with (
        open_socket(first, token_for(api_client, owner, tenant)) as owner_socket,
        open_socket(second, token_for(api_client, reader, tenant)) as reader_socket,
        open_socket(first, token_for(api_client, owner_of(other), other)) as stranger,
    ):
        # A real write through the API; the event is dispatched and fanned out by the worker.
        updated = editor_client.patch(
            f"/api/v1/products/{created.json()['id']}/", {"price": "12.50"}, format="json"
        )
        assert updated.status_code == 200
        for socket in (owner_socket, reader_socket):
            message = receive(socket)
            # The creation's notification may still be on its way from the worker: skip it.
            while message["topic"] == "catalog.product.created":
                message = receive(socket)
            assert message["topic"] == "catalog.product.updated"
            assert message["data"]["sku"] == "WS-1"
            assert message["data"]["changed"] == ["price"]
        # The other tenant's socket got nothing before its pong.
        assert request(stranger, {"type": "ping"}) == {"type": "pong"}


def test_resume_replays_what_was_missed_in_order_without_duplicates(servers, alpha, api_client):
    tenant, owner, _ = alpha
    token = token_for(api_client, owner, tenant)
    for n in range(1, 4):  # while nobody is connected (tasks run inline here)
        announce(tenant, n=n)
    with open_socket(servers[0], token) as socket:
        socket.send(json.dumps({"type": "resume", "after": None}))
        replayed = [receive(socket) for _ in range(3)]
        assert [m["data"]["n"] for m in replayed] == [1, 2, 3]
        assert receive(socket) == {"type": "resumed", "count": 3}
        # Acknowledged ones are not replayed by a resume without `after` ...
        for message in replayed[:2]:
            assert request(socket, {"type": "ack", "id": message["id"]}) == {
                "type": "acked",
                "id": message["id"],
            }
    with open_socket(servers[1], token) as socket:
        socket.send(json.dumps({"type": "resume", "after": None}))
        assert receive(socket)["data"] == {"n": 3}
        assert receive(socket) == {"type": "resumed", "count": 1}
        # ... and `after` replays strictly after the one named.
        socket.send(json.dumps({"type": "resume", "after": replayed[0]["id"]}))
        assert [receive(socket)["data"]["n"] for _ in range(2)] == [2, 3]
        assert receive(socket) == {"type": "resumed", "count": 2}
        # Then live ones follow, once.
        announce(tenant, n=4)
        assert receive(socket)["data"] == {"n": 4}
        assert request(socket, {"type": "ping"}) == {"type": "pong"}


def test_subscribe_narrows_and_unsubscribe_widens_again(servers, alpha, api_client):
    tenant, owner, _ = alpha
    with open_socket(servers[0], token_for(api_client, owner, tenant)) as socket:
        assert request(socket, {"type": "subscribe", "topics": ["catalog.import.*"]}) == {
            "type": "subscribed",
            "topics": ["catalog.import.*"],
        }
        announce(tenant, topic="catalog.product.updated", skipped=True)
        announce(tenant, topic="catalog.import.finished", job="j1")
        message = receive(socket)
        assert (message["topic"], message["data"]) == ("catalog.import.finished", {"job": "j1"})
        assert request(socket, {"type": "unsubscribe", "topics": ["catalog.import.*"]}) == {
            "type": "unsubscribed",
            "topics": ["catalog.import.*"],
        }
        # Stored all the same: the REST inbox has both.
        inbox = api_client.get("/api/v1/notifications/").json()["results"]
        assert {n["topic"] for n in inbox} == {"catalog.product.updated", "catalog.import.finished"}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "subscribe", "topics": "catalog.*"}, "invalid-message"),
        ({"type": "subscribe", "topics": []}, "invalid-message"),
        ({"type": "subscribe", "topics": ["members.*"]}, "unknown-topic"),
        ({"type": "unsubscribe", "topics": ["catalog.product.renamed"]}, "unknown-topic"),
        ({"type": "ack"}, "invalid-message"),
        ({"type": "ack", "id": "00000000-0000-0000-0000-000000000000"}, "not-found"),
        ({"type": "resume", "after": "nonsense"}, "invalid-message"),
        ({"type": "resume", "after": "00000000-0000-0000-0000-000000000000"}, "not-found"),
    ],
)
def test_bad_protocol_messages_get_an_error(servers, alpha, api_client, message, code):
    tenant, owner, _ = alpha
    with open_socket(servers[0], token_for(api_client, owner, tenant)) as socket:
        reply = request(socket, message)
        assert (reply["type"], reply["code"]) == ("error", code)
        assert request(socket, {"type": "ping"}) == {"type": "pong"}


def test_another_users_notification_cannot_be_acked(servers, alpha, api_client):
    tenant, owner, reader = alpha
    announce(tenant, n=1)
    owners = api_client.get(
        "/api/v1/notifications/",
        HTTP_AUTHORIZATION=f"Bearer {token_for(api_client, owner, tenant)}",
    ).json()["results"]
    with open_socket(servers[0], token_for(api_client, reader, tenant)) as socket:
        reply = request(socket, {"type": "ack", "id": owners[0]["id"]})
        assert reply["code"] == "not-found"


def test_the_socket_closes_when_its_token_expires(servers, alpha, api_client):
    tenant, owner, _ = alpha
    token = AccessToken(token_for(api_client, owner, tenant))
    token.set_exp(lifetime=timedelta(seconds=1))
    with connect(f"{servers[0].ws_url}{PATH}?token={token}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        messages = []
        while True:
            try:
                messages.append(receive(socket))
            except ConnectionClosed as closed:
                code = closed.rcvd.code
                break
    assert code == 4401
    assert messages[-1]["code"] == "token-expired"
