"""Redis behind Sentinel, its primary killed under load (docs/scale-out.md, "Redis with Sentinel").

A primary, its replica and three sentinels run on loopback (tests/fixtures/redis_sentinel.py);
two gunicorn processes serve the API and a uvicorn the WebSockets, every one of them told only
where the sentinels are (REDIS_SENTINELS). While clients read a product (cached reads, answered
from each process's memory through its tracking connection) and rename it (which bumps the
catalog's version), the primary is killed with SIGKILL. What the drill shows:

- no client sees a 500, an unanswered request or a 503 (the rate limits fail open, the default):
  while there is no primary, reads and writes are served from the database;
- after the failover, a rename made through one process is read at once through the other:
  the tracking connections noticed the switch, forgot what they held and track on the new
  primary (where they are listed);
- the rate limits count on the new primary again: responses carry RateLimit-* headers again,
  and a tenant on a tight plan is refused with a 429;
- a WebSocket opened before the failover stays open and receives a notification sent after it;
- a Celery result stored before the failover is read after it, and a new one stored, through the
  sentinels.

It prints its numbers (docs/scale-out.md quotes them); run with -s to see them.
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import pytest
import redis
from django.conf import settings
from websockets.sync.client import ClientConnection, connect

from kernel.tenancy.models import Plan
from tests.catalog_helpers import PRODUCTS, product_url
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.redis_sentinel import SentinelGroup
from tests.fixtures.servers import LOOPBACK, LiveServer, server_environment
from tests.helpers import member_with_role, outcome, owner_of

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE = "tenantapi"
# Passwords for the data nodes and for the sentinels, with characters a URL must escape.
PASSWORD = "d@ta/pw"
SENTINEL_PASSWORD = "s3nt:nel"
TOKEN = "/api/v1/auth/token/"
ME = "/api/v1/auth/me/"
NOTIFICATIONS_WS = "/ws/v1/notifications/"
CLIENT_TIMEOUT = 10.0
READERS = 3
LOAD_BEFORE_KILL_SECONDS = 1.0
RECOVERY_TIMEOUT = 20.0
RESULTS_DB = 3


def plan(*, burst: int, per_minute: int) -> Plan:
    with outcome():
        return Plan.objects.create(
            code=f"sentinel-{uuid.uuid4().hex[:12]}",
            name="Sentinel drill",
            requests_per_minute=per_minute,
            burst=burst,
        )


def bearer(server: LiveServer, user, tenant) -> dict[str, str]:
    body = {"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
    response = httpx.post(f"{server.url}{TOKEN}", json=body, timeout=CLIENT_TIMEOUT)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


def eventually(check: Callable[[], bool], what: str, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Seconds until `check` held."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"Waited {timeout:.0f}s for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Load:
    """Readers of one product, on both API processes in turn, and a writer renaming it."""

    servers: list[LiveServer]
    headers: dict[str, str]
    product_id: str
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, call: Callable[[], httpx.Response]) -> None:
        try:
            response = call()
        except httpx.HTTPError as exc:  # a hang or a dropped connection: as bad as a 500
            with self.lock:
                self.outcomes[(kind, type(exc).__name__)] += 1
            return
        with self.lock:
            self.outcomes[(kind, response.status_code)] += 1
            if response.status_code >= 500:
                self.failures.append(f"{kind} {response.status_code}: {response.text[:300]}")

    def read(self, n: int) -> None:
        with httpx.Client(headers=self.headers, timeout=CLIENT_TIMEOUT) as http:
            while not self.stop.is_set():
                url = f"{self.servers[n % 2].url}{product_url(self.product_id)}"
                self.record("read", lambda url=url: http.get(url))
                n += 1

    def write(self) -> None:
        with httpx.Client(headers=self.headers, timeout=CLIENT_TIMEOUT) as http:
            n = 0
            while not self.stop.is_set():
                url = f"{self.servers[n % 2].url}{product_url(self.product_id)}"
                self.record("write", lambda url=url, n=n: http.patch(url, json={"name": f"L{n}"}))
                n += 1
                time.sleep(0.02)

    @contextmanager
    def running(self):
        threads = [threading.Thread(target=self.read, args=(n,)) for n in range(READERS)]
        threads.append(threading.Thread(target=self.write))
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=CLIENT_TIMEOUT * 2)


@contextmanager
def notifications_socket(server: LiveServer, headers: dict[str, str]):
    token = headers["Authorization"].removeprefix("Bearer ")
    with connect(f"{server.ws_url}{NOTIFICATIONS_WS}?token={token}") as ws:
        assert json.loads(ws.recv(timeout=CLIENT_TIMEOUT)) == {"type": "authenticated"}
        yield ws


def notified_sku(ws: ClientConnection, sku: str, timeout: float = RECOVERY_TIMEOUT) -> bool:
    """Whether a notification about product `sku` arrives (the renames' are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = json.loads(ws.recv(timeout=left))
        if message.get("type") == "notification" and message["data"].get("sku") == sku:
            return True
    return False


def rate_limited(server: LiveServer, headers: dict[str, str]) -> bool:
    return "RateLimit-Limit" in httpx.get(f"{server.url}{ME}", headers=headers).headers


def tracking_connections(group: SentinelGroup) -> int:
    """The tracked keys' connections (kernel/tracked.py names them) open on the new primary."""
    with redis.Redis(host=LOOPBACK, port=group.replica.port, password=PASSWORD) as client:
        return sum(c["name"].startswith("tracked-keys-") for c in client.client_list())


def error_lines(server: LiveServer) -> list[str]:
    return [
        line
        for line in server.log().splitlines()
        if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line
    ]


def layer_down_seconds(server: LiveServer) -> list[float]:
    """How long each outage of the channel layer's wait lasted (kernel/channel_layer.py)."""
    return [
        json.loads(line)["down_seconds"]
        for line in server.log().splitlines()
        if '"event": "channel_layer_receive_recovered"' in line
    ]


def metric(server: LiveServer, name: str, labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=CLIENT_TIMEOUT).text
    prefix = f"{settings.PROMETHEUS_METRIC_NAMESPACE}_{name}{{{labels}}} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


# Stores a Celery result and reads the results named, with the settings of a process whose
# environment names the sentinels (config/settings/base.py), through the app every process uses.
CELERY_RESULTS = """
import json, sys
import django
django.setup()
from config.celery import app
store, read = sys.argv[1], sys.argv[2:]
app.backend.store_result(store, {"stored": store}, "SUCCESS")
print(json.dumps({task: app.backend.get_task_meta(task)["result"] for task in [store, *read]}))
"""


def celery_results(environment: dict[str, str], store: str, *read: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CELERY_RESULTS, store, *read],
        env=environment,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_killing_the_primary_under_load(
    redis_sentinel: Callable[..., SentinelGroup],
    live_wsgi_server_factory: Callable[..., LiveServer],
    live_asgi_server_factory: Callable[..., LiveServer],
):
    # Given Redis behind three sentinels, and every server told only where they are
    group = redis_sentinel(service=SERVICE, password=PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    password = quote(PASSWORD, safe="")
    results_backend = ";".join(
        f"sentinel://:{password}@{address}/{RESULTS_DB}" for address in group.addresses.split(",")
    )
    environment = {
        "REDIS_SENTINELS": group.addresses,
        "REDIS_SENTINEL_MASTER": SERVICE,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "REDIS_URL": f"redis://:{password}@{SERVICE}/0",
        "CELERY_RESULT_BACKEND": results_backend,
    }
    api = [live_wsgi_server_factory(**environment) for _ in range(2)]
    # ...a third API process that serves nothing during the failover, and trusts what its
    # tracking connection holds for a minute without asking Redis: only the connection's end
    # can tell it that it holds values of a server that is gone
    bystander = live_wsgi_server_factory(**environment, CACHED_READ_TRACKING_CONFIRM_SECONDS="60")
    sockets = live_asgi_server_factory(**environment)
    # ...a tenant whose plan the load stays within, a reader of its notifications, and a tenant
    # on a plan that allows a request or two
    tenant = make_tenant(plan_code=plan(burst=100_000, per_minute=1_000_000).code)
    tight = make_tenant(plan_code=plan(burst=2, per_minute=1).code)
    reader = member_with_role(tenant, "viewer")
    owner_headers = bearer(api[0], owner_of(tenant), tenant)
    tight_headers = bearer(api[0], owner_of(tight), tight)
    created = httpx.post(
        f"{api[0].url}{PRODUCTS}",
        json={"sku": "SENT-0", "name": "Before", "price": "9.50"},
        headers=owner_headers,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    assert rate_limited(api[0], owner_headers)
    for _ in range(2):  # the second read is answered from the bystander's memory
        warm = httpx.get(f"{bystander.url}{product_url(product_id)}", headers=owner_headers)
        assert warm.json()["name"] == "Before"
    assert celery_results(server_environment(**environment), "before") == {
        "before": {"stored": "before"}
    }

    with notifications_socket(sockets, bearer(api[0], reader, tenant)) as ws:
        load = Load(servers=api, headers=owner_headers, product_id=product_id)
        with load.running():
            time.sleep(LOAD_BEFORE_KILL_SECONDS)
            # When the primary dies under load
            group.kill_primary()
            killed = time.monotonic()
            failover_seconds = group.wait_for_failover()
            # ...and the load goes on until every API process counts on the new primary again
            for server in api:
                eventually(lambda s=server: rate_limited(s, owner_headers), "the rate limits")
            recovered_seconds = time.monotonic() - killed

        # Then no client saw a 500, a 503 or no answer at all
        print(
            f"\nfailover {failover_seconds:.1f} s after the kill; rate limits back after "
            f"{recovered_seconds:.1f} s; outcomes {dict(load.outcomes)}"
        )
        assert load.failures == []
        assert set(load.outcomes) <= {("read", 200), ("write", 200)}, load.outcomes

        # ...a rename through one process is read at once through another, the bystander
        # first: nothing stale
        readers = [bystander, api[1], api[0]]
        for n in range(6):
            writer, reader_server = api[n % 2], readers[n % 3]
            url = product_url(product_id)
            renamed = httpx.patch(
                f"{writer.url}{url}", json={"name": f"After {n}"}, headers=owner_headers
            )
            assert renamed.status_code == 200, renamed.text
            read = httpx.get(f"{reader_server.url}{url}", headers=owner_headers)
            assert read.status_code == 200, read.text
            assert read.json()["name"] == f"After {n}"
        # ...because each process's tracking connection saw its connection end, forgot what it
        # held, and tracks on the new primary
        for server in [*api, bystander]:
            assert metric(server, "tracked_keys_lost_total", 'reason="connection"') >= 1
        assert tracking_connections(group) >= len(api) + 1

        # ...the rate limits count on the new primary: the tight tenant is refused
        statuses = [
            httpx.get(f"{api[0].url}{ME}", headers=tight_headers).status_code for _ in range(6)
        ]
        assert 429 in statuses, statuses

        # ...and the socket opened before the failover receives a notification sent after it
        after = httpx.post(
            f"{api[1].url}{PRODUCTS}",
            json={"sku": "SENT-AFTER", "name": "After the failover", "price": "1.00"},
            headers=owner_headers,
        )
        assert after.status_code == 201, after.text
        assert notified_sku(ws, "SENT-AFTER")

    # ...no server logged an error
    for server in [*api, bystander, sockets]:
        assert error_lines(server) == []
    print(f"socket server's wait for messages down {layer_down_seconds(sockets)} s")
    # ...and Celery's results are there through the sentinels, the one from before too
    assert celery_results(server_environment(**environment), "after", "before") == {
        "after": {"stored": "after"},
        "before": {"stored": "before"},
    }
