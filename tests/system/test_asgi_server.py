"""What the ASGI server (uvicorn, the WebSocket server) lets in, as deployed (a finding of the
source review, docs/security.md): a request body over its limit is refused before it is read,
with production settings its HTTP is its probes only, and large WebSocket messages are refused
before they are parsed, the more so before authentication.
"""

import json
import re
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.servers import LiveServer
from tests.helpers import owner_of, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

NOTIFICATIONS = "/ws/v1/notifications/"
TIMEOUT = 10.0


def raw_request(server: LiveServer, head: bytes, body_chunks=()) -> bytes:
    """Send a request as raw bytes (a body the client never finishes sending, a huge declared
    length) and return the server's first answer: its head and as much of its body as its
    Content-Length declares (they may come in separate reads)."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as conn:
        conn.sendall(head)
        try:
            for chunk in body_chunks:
                conn.sendall(chunk)
        except OSError:
            pass  # the server answered and closed while the body was still coming
        answer = b""
        while not _complete(answer):
            try:
                received = conn.recv(65_536)
            except OSError:
                break
            if not received:
                break
            answer += received
        return answer


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return match is None or len(body) >= int(match.group(1))


def test_a_declared_oversized_body_is_refused_before_a_byte_of_it_is_read(
    live_asgi_server_factory,
):
    server = live_asgi_server_factory()
    head = (
        b"POST /api/v1/products/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n"
    )

    # Nothing of the 60 MB is sent: the answer must not wait for it
    answer = raw_request(server, head)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer
    assert b"payload-too-large" in answer


def test_a_streamed_body_is_cut_off_at_its_limit(live_asgi_server_factory):
    server = live_asgi_server_factory(MAX_REQUEST_BODY_BYTES="100000")
    head = (
        b"POST /api/v1/products/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 32_768
    body = [b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(8)]  # 256 KB, never ended

    answer = raw_request(server, head, body)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_with_production_settings_the_websocket_server_answers_its_probes_and_metrics_only(
    live_asgi_server_factory,
):
    server = live_asgi_server_factory(ASGI_SERVE_HTTP="false")

    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        api = http.get("/api/v1/products/")
        docs = http.get("/api/v1/schema/")
        admin = http.get("/admin/login/")
        probes = [http.get("/healthz"), http.get("/readyz")]
        metrics = http.get("/metrics")  # from loopback, which /metrics admits

    for refused in (api, docs, admin):
        assert refused.status_code == 404, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
    assert [probe.status_code for probe in probes] == [200, 200]
    # Prometheus scrapes the sockets' numbers from this server (deploy/prometheus).
    assert metrics.status_code == 200
    assert "tenantapi_websocket_slow_closed_total" in metrics.text
    assert "tenantapi_channel_layer_dropped_total" in metrics.text


def test_a_large_message_before_authentication_closes_the_socket_unparsed(
    live_asgi_server_factory,
):
    server = live_asgi_server_factory()
    with connect(f"{server.ws_url}{NOTIFICATIONS}") as ws:
        ws.send("{" + " " * 10_000)  # not even JSON: refused on its size alone

        error = json.loads(ws.recv(timeout=TIMEOUT))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)

    assert (error["type"], error["code"]) == ("error", "message-too-big")
    assert closed.value.rcvd.code == 1009


def test_a_frame_over_the_servers_limit_never_reaches_the_application(live_asgi_server_factory):
    server = live_asgi_server_factory()
    with connect(f"{server.ws_url}{NOTIFICATIONS}", max_size=None) as ws:
        ws.send("x" * 200_000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)

    assert closed.value.rcvd.code == 1009


def test_a_large_message_of_an_authenticated_socket_gets_an_error_and_the_socket_lives(
    live_asgi_server_factory, api_client, tenant
):
    server = live_asgi_server_factory(WEBSOCKET_MAX_MESSAGE_BYTES="20000")
    token = sign_in(api_client, owner_of(tenant), tenant)["access"]
    with connect(f"{server.ws_url}{NOTIFICATIONS}?token={token}") as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "authenticated"}
        ws.send(json.dumps({"type": "ping", "padding": "x" * 30_000}))
        error = json.loads(ws.recv(timeout=TIMEOUT))
        ws.send(json.dumps({"type": "ping"}))
        pong = json.loads(ws.recv(timeout=TIMEOUT))

    assert (error["type"], error["code"]) == ("error", "message-too-big")
    assert pong == {"type": "pong"}
