"""An idle socket stays open against real Redis, for as long as the client wants.

Some channels-redis and redis-py pairs drop idle receivers (here: redis-py's 5 s default read
timeout against channels-redis's 5 s blocking pop). The suite idles for a few of those cycles;
`IDLE_SOCKET_SECONDS=300 scripts/test tests/notifications/test_websocket_idle.py` is the long soak.
"""

import json
import os
import time

import pytest
from websockets.sync.client import connect

from kernel.context import tenant_context
from kernel.events import publish
from tests.factories import make_tenant
from tests.helpers import owner_of, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

IDLE_SECONDS = float(os.environ.get("IDLE_SOCKET_SECONDS", "16"))


def test_an_idle_socket_stays_open_and_still_receives(live_asgi_server, api_client):
    tenant = make_tenant(name="Patient")
    token = sign_in(api_client, owner_of(tenant), tenant)["access"]
    url = f"{live_asgi_server.ws_url}/ws/v1/notifications/?token={token}"
    with connect(url, ping_interval=None) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"type": "authenticated"}
        time.sleep(IDLE_SECONDS)  # idle on purpose: no frame either way, not even pings
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}
        with tenant_context(tenant.id):
            publish(topic="catalog.product.updated", data={"after": "idling"})
        assert json.loads(socket.recv(timeout=10))["data"] == {"after": "idling"}
    assert "Exception in ASGI application" not in live_asgi_server.log()
