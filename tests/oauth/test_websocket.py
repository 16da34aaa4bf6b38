"""An app's OAuth access token on the notifications WebSocket, against a live server (uvicorn):
it authenticates as a person's own token does, within its scopes (`notifications.read` or a
4403), and the socket it opened closes the moment its grant or its token is revoked, by the
server's close frame."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kernel.context import tenant_context
from kernel.events import publish
from tests.oauth.conftest import GRANTS, register_app
from tests.oauth.flow import Dance

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/v1/notifications/"
RECEIVE_TIMEOUT = 20
SCOPES = ["catalog.read", "notifications.read", "offline_access"]


def receive(socket: ClientConnection) -> dict:
    return json.loads(socket.recv(timeout=RECEIVE_TIMEOUT))


def closed_with(socket: ClientConnection) -> tuple[int, list[dict]]:
    """Read until the server closes; the close code it sent and the messages before it."""
    messages = []
    while True:
        try:
            messages.append(receive(socket))
        except ConnectionClosed as closed:
            frame = closed.rcvd
            break
    # A close frame from the server, not a connection that just dropped.
    assert frame is not None
    return frame.code, messages


@contextmanager
def open_socket(server, token: str) -> Iterator[ClientConnection]:
    """A socket authenticated with `token` (in the Authorization header, as an app sends it)."""
    with connect(
        server.ws_url + PATH, additional_headers={"Authorization": f"Bearer {token}"}
    ) as socket:
        assert receive(socket) == {"type": "authenticated"}
        yield socket


@pytest.fixture
def granted(live_asgi_server, shop):
    """An app of the shop, and the tokens its owner granted it (notifications, catalog,
    offline access)."""
    _, owner, owner_api = shop
    dance = Dance(live_asgi_server.url, register_app(owner_api, scopes=SCOPES))
    tokens = dance.tokens(email=owner.email, scope=" ".join(SCOPES))
    return dance, tokens


def test_a_token_with_the_notifications_scope_receives_notifications(
    live_asgi_server, shop, granted
):
    tenant, _, _ = shop
    _, tokens = granted
    with open_socket(live_asgi_server, tokens["access_token"]) as socket:
        with tenant_context(tenant.id):
            publish(topic="catalog.product.updated", data={"sku": "OA-WS-1"})
        message = receive(socket)
    assert message["type"] == "notification"
    assert message["topic"] == "catalog.product.updated"
    assert message["data"] == {"sku": "OA-WS-1"}


def test_a_token_without_the_notifications_scope_is_refused_4403(live_asgi_server, shop):
    # The person holds notifications.read; the app was not granted it
    _, owner, owner_api = shop
    dance = Dance(live_asgi_server.url, register_app(owner_api, scopes=["catalog.read"]))
    tokens = dance.tokens(email=owner.email, scope="catalog.read")
    with connect(f"{live_asgi_server.ws_url}{PATH}?token={tokens['access_token']}") as socket:
        code, messages = closed_with(socket)
    assert code == 4403
    assert messages[-1]["code"] == "permission-denied"


def test_revoking_the_grant_closes_the_open_socket_at_once(live_asgi_server, shop, granted):
    _, _, owner_api = shop
    _, tokens = granted
    with open_socket(live_asgi_server, tokens["access_token"]) as socket:
        [grant] = owner_api.get(GRANTS).json()["results"]
        assert owner_api.delete(f"{GRANTS}{grant['id']}/").status_code == 204
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages[-1]["code"] == "logged-out"
    # And the token opens no socket again
    with connect(f"{live_asgi_server.ws_url}{PATH}?token={tokens['access_token']}") as socket:
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages == [{"type": "error", "code": "not-authenticated", "detail": "Invalid token."}]


@pytest.mark.parametrize("revoked", ["access_token", "refresh_token"])
def test_revoking_the_token_at_the_revocation_endpoint_closes_the_open_socket_at_once(
    live_asgi_server, granted, revoked
):
    dance, tokens = granted
    with open_socket(live_asgi_server, tokens["access_token"]) as socket:
        # RFC 7009, by the app's back end against the server
        with httpx.Client(base_url=live_asgi_server.url, timeout=RECEIVE_TIMEOUT) as backend:
            answer = backend.post(
                "/oauth/revoke/",
                data={"token": tokens[revoked], "token_type_hint": revoked},
                auth=(dance.app.client_id, dance.app.client_secret),
            )
        assert answer.status_code == 200, answer.text
        code, messages = closed_with(socket)
    assert code == 4401
    assert messages[-1]["code"] == "logged-out"
    with connect(f"{live_asgi_server.ws_url}{PATH}?token={tokens['access_token']}") as socket:
        code, _ = closed_with(socket)
    assert code == 4401
