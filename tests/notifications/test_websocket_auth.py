"""The notifications socket's authentication, against a real uvicorn process and client."""

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from kernel.context import tenant_context
from kernel.tenancy.models import Membership, MembershipRole, Role, Tenant
from kernel.tenants import tenant_set_status
from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.fixtures.servers import server_environment, start_live_asgi_server

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/v1/notifications/"
RECEIVE_TIMEOUT = 10


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    # One server for the module; a short authentication deadline, so that the timeout itself
    # can be tested.
    live = start_live_asgi_server(
        tmp_path_factory.mktemp("uvicorn"), server_environment(WEBSOCKET_AUTH_TIMEOUT_SECONDS="1")
    )
    yield live
    live.stop()


@pytest.fixture
def owner_tokens(api_client):
    user = make_user(email="ws-owner@example.com")
    tenant = make_tenant(name="Socketeers", owner=user)
    response = api_client.post(
        "/api/v1/auth/token/",
        {"email": "ws-owner@example.com", "password": DEFAULT_PASSWORD},
        format="json",
    )
    assert response.status_code == 200
    return tenant, response.json()


def receive(socket) -> dict:
    return json.loads(socket.recv(timeout=RECEIVE_TIMEOUT))


def viewer_signed_in(tenant, email: str, api_client) -> tuple[Membership, dict]:
    """A new viewer of `tenant`, and the tokens of their sign-in."""
    with tenant_context(tenant.id):
        viewer = Role.objects.get(name="viewer")
        membership = Membership.objects.create(user=make_user(email=email))
        MembershipRole.objects.create(membership=membership, role=viewer)
    response = api_client.post(
        "/api/v1/auth/token/", {"email": email, "password": DEFAULT_PASSWORD}, format="json"
    )
    return membership, response.json()


def closed_with(socket) -> tuple[int, list[dict]]:
    """Read until the server closes; return the close code and the messages before it."""
    messages = []
    while True:
        try:
            messages.append(receive(socket))
        except ConnectionClosed as closed:
            return closed.rcvd.code, messages


def test_bearer_header_authenticates_and_ping_is_answered(server, owner_tokens):
    _, tokens = owner_tokens
    with connect(
        server.ws_url + PATH, additional_headers={"Authorization": f"Bearer {tokens['access']}"}
    ) as socket:
        assert receive(socket) == {"type": "authenticated"}
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket) == {"type": "pong"}


def test_query_token_authenticates(server, owner_tokens):
    _, tokens = owner_tokens
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        assert receive(socket) == {"type": "authenticated"}


def test_first_message_authenticates(server, owner_tokens):
    _, tokens = owner_tokens
    with connect(server.ws_url + PATH) as socket:
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket)["code"] == "not-authenticated"
        socket.send(json.dumps({"type": "auth", "token": tokens["access"]}))
        assert receive(socket) == {"type": "authenticated"}


def test_no_credential_in_time_closes_4401(server):
    with connect(server.ws_url + PATH) as socket:
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages[-1]["code"] == "auth-timeout"


@pytest.mark.parametrize("token", ["garbage", "eyJhbGciOiJub25lIn0.e30."])
def test_a_bad_token_closes_4401(server, token):
    with connect(f"{server.ws_url}{PATH}?token={token}") as socket:
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages == [{"type": "error", "code": "not-authenticated", "detail": "Invalid token."}]


def test_a_refresh_token_is_not_an_access_token(server, owner_tokens):
    _, tokens = owner_tokens
    with connect(f"{server.ws_url}{PATH}?token={tokens['refresh']}") as socket:
        code, _ = closed_with(socket)
    assert code == 4401


def test_missing_notifications_permission_closes_4403(server, owner_tokens, api_client):
    tenant, _ = owner_tokens
    outsider = make_user(email="no-notifications@example.com")
    with tenant_context(tenant.id):
        role = Role.objects.create(name="catalog only", permissions=["catalog.read"])
        membership = Membership.objects.create(user=outsider)
        MembershipRole.objects.create(membership=membership, role=role)
    tokens = api_client.post(
        "/api/v1/auth/token/",
        {"email": "no-notifications@example.com", "password": DEFAULT_PASSWORD},
        format="json",
    ).json()
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        code, messages = closed_with(socket)
    assert code == 4403
    assert messages[-1]["code"] == "permission-denied"


def test_a_suspended_tenant_cannot_connect(server, owner_tokens):
    tenant, tokens = owner_tokens
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        code, messages = closed_with(socket)
    assert code == 4403
    assert messages[-1]["code"] == "tenant-suspended"


def test_suspending_a_tenant_closes_its_open_sockets_and_no_others(
    server, owner_tokens, api_client
):
    tenant, tokens = owner_tokens
    bystander = make_user(email="bystander@example.com")
    make_tenant(name="Bystanders", owner=bystander)
    other = api_client.post(
        "/api/v1/auth/token/",
        {"email": "bystander@example.com", "password": DEFAULT_PASSWORD},
        format="json",
    ).json()
    with (
        connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket,
        connect(f"{server.ws_url}{PATH}?token={other['access']}") as other_socket,
    ):
        assert receive(socket) == {"type": "authenticated"}
        assert receive(other_socket) == {"type": "authenticated"}
        # The operator's path (the admin's Suspend action calls this service).
        tenant_set_status(tenant_ids=[tenant.id], status=Tenant.Status.SUSPENDED)
        code, messages = closed_with(socket)
        assert code == 4403
        assert messages[-1]["code"] == "tenant-suspended"
        other_socket.send(json.dumps({"type": "ping"}))
        assert receive(other_socket) == {"type": "pong"}


def test_logout_closes_the_sessions_sockets(server, owner_tokens, api_client):
    _, tokens = owner_tokens
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        response = api_client.post(
            "/api/v1/auth/logout/", {"refresh": tokens["refresh"]}, format="json"
        )
        assert response.status_code == 204
        code, _ = closed_with(socket)
    assert code == 4401


def test_malformed_messages_get_an_error_and_the_socket_stays(server, owner_tokens):
    _, tokens = owner_tokens
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        for bad in ["not json", "[1, 2]", '{"no": "type"}', '{"type": "launch-missiles"}']:
            socket.send(bad)
            assert receive(socket)["type"] == "error"
        socket.send(b"\x00binary")
        assert receive(socket)["type"] == "error"
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket) == {"type": "pong"}


def test_removing_a_member_closes_their_sockets(server, owner_tokens, api_client):
    tenant, owner = owner_tokens
    membership, tokens = viewer_signed_in(tenant, "leaving@example.com", api_client)
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        removed = api_client.delete(
            f"/api/v1/members/{membership.id}/",
            HTTP_AUTHORIZATION=f"Bearer {owner['access']}",
        )
        assert removed.status_code == 204
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages[-1]["code"] == "not-authenticated"


def test_asking_for_erasure_closes_the_persons_sockets_at_once(server, owner_tokens, api_client):
    tenant, _ = owner_tokens
    _, tokens = viewer_signed_in(tenant, "erasing@example.com", api_client)
    with connect(f"{server.ws_url}{PATH}?token={tokens['access']}") as socket:
        assert receive(socket) == {"type": "authenticated"}
        # The erasure's first step, in the request: the job comes after (accounts/erasure.py).
        asked = api_client.delete(
            "/api/v1/auth/me/",
            {"password": DEFAULT_PASSWORD},
            format="json",
            HTTP_AUTHORIZATION=f"Bearer {tokens['access']}",
        )
        assert asked.status_code == 202, asked.content
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages[-1]["code"] == "not-authenticated"
