"""A client that stops reading cannot make the server buffer without bound, and loses nothing.

The stalled client is a raw socket that completes the WebSocket handshake with a tiny receive
window and then never reads: what a frozen browser tab or a dead mobile network looks like to
the server. (A WebSocket client library would keep draining the socket in the background.)
"""

import base64
import json
import os
import socket as sockets
import time

import httpx
import pytest
from websockets.sync.client import connect

from kernel.context import tenant_context
from kernel.events import publish
from tests.factories import make_tenant
from tests.fixtures.servers import server_environment, start_live_asgi_server
from tests.helpers import owner_of, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/v1/notifications/"
SENT = 20
BIG = "x" * 512 * 1024  # each notification alone is larger than every buffer on the way


@pytest.fixture
def impatient_server(django_db_setup, tmp_path_factory):
    server = start_live_asgi_server(
        tmp_path_factory.mktemp("uvicorn"), server_environment(WEBSOCKET_SEND_TIMEOUT_SECONDS="1")
    )
    yield server
    server.stop()


def stalled_client(port: int, token: str) -> sockets.socket:
    raw = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    # Before connecting, so that the window the server sees is small from the start.
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET {PATH}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    return raw


def wait_for_metric(server, line: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in httpx.get(f"{server.url}/metrics").text.splitlines():
            return True
        time.sleep(0.2)
    return False


def read_until_closed(raw: sockets.socket) -> None:
    raw.settimeout(30)
    while raw.recv(1 << 20):
        pass


def test_a_stalled_client_is_dropped_and_resumes_without_loss(impatient_server, api_client):
    tenant = make_tenant(name="Slowpokes", plan_code="enterprise")
    token = sign_in(api_client, owner_of(tenant), tenant)["access"]
    raw = stalled_client(impatient_server.port, token)
    try:
        for n in range(SENT):  # tasks run inline here: stored, then pushed
            with tenant_context(tenant.id):
                publish(topic="catalog.import.finished", data={"n": n, "blob": BIG})
        # Still not reading: the server gives up on it within its send deadline ...
        assert wait_for_metric(impatient_server, "tenantapi_websocket_slow_closed_total 1.0")
        # ... and draining now reaches the end of the connection.
        read_until_closed(raw)
    finally:
        raw.close()
    assert "Exception in ASGI application" not in impatient_server.log()

    # Everything is still there for a client that reads.
    with connect(f"{impatient_server.ws_url}{PATH}?token={token}", max_size=None) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"type": "authenticated"}
        socket.send(json.dumps({"type": "resume", "after": None}))
        replayed = [json.loads(socket.recv(timeout=30)) for _ in range(SENT)]
        assert [m["data"]["n"] for m in replayed] == list(range(SENT))
        assert json.loads(socket.recv(timeout=10)) == {"type": "resumed", "count": SENT}
