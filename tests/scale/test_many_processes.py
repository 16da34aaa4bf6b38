"""The whole fleet at once (docs/scale-out.md, "Many processes at once").

Two gunicorn processes of two sync workers each serve the API, two uvicorn processes the
WebSockets (`ASGI_SERVE_HTTP=false`, as deployed), and two Celery workers consume one queue on
the Redis broker; all of them share the test database and Redis (cache, rate limits, channel
layer). The API processes send their tasks through the broker, as in production. What it shows:

- a tenant's rate limit is exact across the four API workers: a concurrent burst gets exactly
  the plan's burst, however the requests are spread;
- an `Idempotency-Key` is honoured across processes: the same POST sent at once through both
  creates one product, and every other answer is the key's 409 or the first answer replayed;
- a write through one API process is read through the other at once, and back;
- an event published once (a product created through gunicorn) becomes notifications through
  the Celery workers that reach a socket on each uvicorn process exactly once.

It prints its numbers (docs/scale-out.md quotes them); run with -s to see them.
"""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis
from django.conf import settings
from websockets.sync.client import ClientConnection, connect

from catalog.models import Product
from kernel.tenancy.models import Plan
from tests.catalog_helpers import PRODUCTS, product_url
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.servers import (
    LiveServer,
    server_environment,
    start_live_asgi_server,
    start_live_wsgi_server,
)
from tests.helpers import ME, TOKEN, member_with_role, outcome, owner_of

pytestmark = pytest.mark.django_db(transaction=True)

NOTIFICATIONS_WS = "/ws/v1/notifications/"
TIMEOUT = 20.0
# How long a socket is still listened to after its notification arrived, for a duplicate.
QUIET_SECONDS = 1.5


@dataclass
class Fleet:
    api: list[LiveServer]
    sockets: list[LiveServer]
    workers: list[CeleryWorker]


@pytest.fixture(scope="module")
def fleet(django_db_setup, tmp_path_factory) -> Iterator[Fleet]:
    """Two gunicorn (two workers each), two uvicorn and two Celery workers on one queue, started
    side by side to keep the module's wall time down."""
    queue = f"fleet-{uuid.uuid4().hex[:8]}"
    # Tasks the API processes send, and those the workers' tasks send on, go to the one queue.
    tasks = {"CELERY_TASK_ALWAYS_EAGER": "false", "CELERY_TASK_DEFAULT_QUEUE": queue}
    workers = [CeleryWorker(queue=queue, env={**worker_environment(), **tasks}) for _ in range(2)]
    for n, worker in enumerate(workers):
        # Two nodes of one queue: each its own node name.
        hostname = worker.command.index("--hostname") + 1
        worker.command[hostname] = f"{queue}-{n}@%h"

    # Made here, not in the threads: tmp_path_factory is not safe to use from several at once.
    api_directories = [tmp_path_factory.mktemp("gunicorn") for _ in range(2)]
    socket_directories = [tmp_path_factory.mktemp("uvicorn") for _ in range(2)]

    def api(directory) -> LiveServer:
        return start_live_wsgi_server(directory, server_environment(**tasks), workers=2)

    def websocket(directory) -> LiveServer:
        return start_live_asgi_server(
            directory, server_environment(ASGI_SERVE_HTTP="false", **tasks)
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        api_futures = [pool.submit(api, directory) for directory in api_directories]
        socket_futures = [pool.submit(websocket, directory) for directory in socket_directories]
        worker_futures = [pool.submit(worker.start) for worker in workers]
        futures = api_futures + socket_futures + worker_futures
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in api_futures + socket_futures:
                if future.exception() is None:
                    future.result().stop()
            for worker in workers:
                worker.stop()
            raise
    print(f"\nfleet: 2 gunicorn x 2, 2 uvicorn, 2 Celery up in {time.monotonic() - started:.1f}s")
    fleet = Fleet(
        api=[f.result() for f in api_futures],
        sockets=[f.result() for f in socket_futures],
        workers=workers,
    )
    yield fleet
    # Before the test database is dropped, which PostgreSQL refuses while a client is connected.
    for server in fleet.api + fleet.sockets:
        server.stop()
    for worker in workers:
        worker.stop()


def idle(fleet: Fleet) -> bool:
    """Whether the queue is empty and every task a worker took has finished."""
    with redis.Redis.from_url(settings.CELERY_BROKER_URL) as broker:
        if broker.llen(fleet.workers[0].queue):
            return False
    for worker in fleet.workers:
        received = worker.find(logger="celery.worker.strategy")
        finished = worker.find(logger="celery.app.trace")
        if len(received) > len(finished):
            return False
    return True


@pytest.fixture(autouse=True)
def settled(fleet: Fleet) -> Iterator[None]:
    """After each test, the tasks it sent have run: the workers must not hold locks on the rows
    the transactional test's teardown truncates (a deadlock there), nor fan out one test's
    events during the next."""
    yield
    deadline = time.monotonic() + TIMEOUT
    while not idle(fleet) and time.monotonic() < deadline:
        time.sleep(0.05)


def bearer(server: LiveServer, user, tenant) -> dict[str, str]:
    body = {"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
    response = httpx.post(f"{server.url}{TOKEN}", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


def concurrently(calls: list, threads: int = 16) -> list[httpx.Response]:
    """Every call at once, as far as `threads` allow: the first `threads` start on a barrier."""
    barrier = threading.Barrier(min(threads, len(calls)))

    def run(index: int) -> httpx.Response:
        with httpx.Client(timeout=TIMEOUT) as http:
            if index < barrier.parties:
                barrier.wait(timeout=TIMEOUT)
            return calls[index](http)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, range(len(calls))))


def test_a_concurrent_burst_across_four_api_workers_gets_exactly_the_plans_burst(fleet):
    # Given a tenant whose plan allows a burst of 10, refilled at 1 a minute, and three members:
    # each credential may use half of it (5), so the three together meet the tenant's bucket
    burst, per_minute = 10, 1
    with outcome():
        plan = Plan.objects.create(
            code=f"fleet-{uuid.uuid4().hex[:12]}",
            name="Fleet",
            requests_per_minute=per_minute,
            burst=burst,
        )
    tenant = make_tenant(plan_code=plan.code)
    members = [member_with_role(tenant, "viewer") for _ in range(3)]
    headers = [bearer(fleet.api[0], user, tenant) for user in members]

    # When 36 requests are sent at once, alternating the two API processes (16 in flight keep
    # all four workers busy) and the three members
    total = 36
    calls = [
        lambda http, n=n: http.get(f"{fleet.api[n % 2].url}{ME}", headers=headers[n % 3])
        for n in range(total)
    ]
    started = time.monotonic()
    responses = concurrently(calls)
    elapsed = time.monotonic() - started

    # Then exactly the burst is served (plus what refilled meanwhile, a token a minute), and
    # every other request is a proper 429
    allowed = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(refused) == total, sorted({r.status_code for r in responses})
    assert burst <= len(allowed) <= burst + int(elapsed * per_minute / 60)
    for response in refused:
        assert response.headers["Content-Type"] == "application/problem+json"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["RateLimit-Remaining"] == "0"
    print(f"\nrate limit: {len(allowed)} of {total} served (burst {burst}) in {elapsed:.2f}s")


def test_one_idempotency_key_sent_through_both_api_processes_at_once_creates_one_product(fleet):
    # Given an editor, and one POST with one Idempotency-Key
    tenant = make_tenant(plan_code="enterprise")
    editor = bearer(fleet.api[0], member_with_role(tenant, "editor"), tenant)
    sku = f"IDEM-{uuid.uuid4().hex[:8]}"
    body = {"sku": sku, "name": "Kettle", "price": "19.90", "currency": "EUR", "stock": 3}
    key = {**editor, "Idempotency-Key": uuid.uuid4().hex}

    def post(server: LiveServer):
        return lambda http: http.post(f"{server.url}{PRODUCTS}", json=body, headers=key)

    # When it is sent 8 times at once, alternating the two API processes
    responses = concurrently([post(fleet.api[n % 2]) for n in range(8)])

    # Then one of them ran the handler; the others were told the key is in use, or were
    # given the first answer again; none created a product or collided on the sku
    first = [
        r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(first) == 1, [(r.status_code, r.text[:200]) for r in responses]
    original = first[0]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["type"].endswith("/idempotency-key-in-use"), response.text
        else:
            assert response.status_code == 201, response.text
            assert response.json() == original.json()
    # And a retry through either process, now that the first has finished, is the first answer
    for server in fleet.api:
        retry = httpx.post(f"{server.url}{PRODUCTS}", json=body, headers=key, timeout=TIMEOUT)
        assert retry.status_code == 201, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == original.json()
        assert retry.headers["Location"] == original.headers["Location"]
    with outcome():
        assert Product.objects.filter(tenant=tenant, sku=sku).count() == 1
    statuses = sorted(r.status_code for r in responses)
    print(f"\nidempotency: 8 concurrent POSTs answered {statuses}; one product")


def test_a_write_through_one_api_process_is_read_at_once_through_the_other(fleet):
    # Given an editor signed in, and a product created through the first process
    tenant = make_tenant(plan_code="enterprise")
    editor = bearer(fleet.api[0], member_with_role(tenant, "editor"), tenant)
    body = {"sku": "RYW-1", "name": "Name 0", "price": "5.00", "currency": "EUR", "stock": 1}
    created = httpx.post(f"{fleet.api[0].url}{PRODUCTS}", json=body, headers=editor)
    assert created.status_code == 201, created.text
    url = product_url(created.json()["id"])

    with httpx.Client(headers=editor, timeout=TIMEOUT) as http:
        # It is read through the second at once, list and detail
        listed = http.get(f"{fleet.api[1].url}{PRODUCTS}").json()["results"]
        assert [p["sku"] for p in listed] == ["RYW-1"]
        assert http.get(f"{fleet.api[1].url}{url}").json()["name"] == "Name 0"

        # When it is renamed through one process after another, each read right after the write
        # goes through the other process, after both have cached the previous version
        for n in range(1, 7):
            writer, reader = fleet.api[n % 2], fleet.api[(n + 1) % 2]
            for server in fleet.api:  # both processes hold the current version
                assert http.get(f"{server.url}{url}").json()["name"] == f"Name {n - 1}"
            renamed = http.patch(f"{writer.url}{url}", json={"name": f"Name {n}"})
            assert renamed.status_code == 200, renamed.text

            # Then the other process answers with the write, and its version and ETag
            read = http.get(f"{reader.url}{url}")
            assert read.json()["name"] == f"Name {n}"
            assert read.json()["version"] == renamed.json()["version"]
            assert read.headers["ETag"] == renamed.headers["ETag"]
            listed = http.get(f"{reader.url}{PRODUCTS}").json()["results"]
            assert [p["name"] for p in listed] == [f"Name {n}"]


@contextmanager
def notifications_socket(server: LiveServer, headers: dict[str, str]):
    token = headers["Authorization"].removeprefix("Bearer ")
    with connect(f"{server.ws_url}{NOTIFICATIONS_WS}?token={token}") as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "authenticated"}
        yield ws


def about(message: dict, sku: str) -> bool:
    return (
        message.get("type") == "notification"
        and message.get("topic") == "catalog.product.created"
        and message["data"].get("sku") == sku
    )


def first_about(ws: ClientConnection, sku: str) -> list[dict]:
    """Messages up to and including the first notification about `sku`."""
    received: list[dict] = []
    deadline = time.monotonic() + TIMEOUT
    while not received or not about(received[-1], sku):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"No notification about {sku} in {TIMEOUT:.0f}s; got {received}")
        received.append(json.loads(ws.recv(timeout=left)))
    return received


def drain(ws: ClientConnection) -> list[dict]:
    """Whatever the socket has received and not yet been read."""
    received = []
    while True:
        try:
            received.append(json.loads(ws.recv(timeout=0.1)))
        except TimeoutError:
            return received


def fan_outs(workers: list[CeleryWorker]) -> list[int]:
    """How many notification fan-outs each worker has run so far."""
    return [
        sum(
            "notifications_fan_out_task" in str(r.get("event"))
            for r in worker.find(logger="celery.app.trace")
        )
        for worker in workers
    ]


def test_one_event_reaches_a_socket_on_each_websocket_process_exactly_once(fleet):
    # Given a tenant's owner connected to both WebSocket processes, and a viewer to the second
    tenant = make_tenant(plan_code="enterprise")
    owner = bearer(fleet.api[0], owner_of(tenant), tenant)
    viewer = bearer(fleet.api[1], member_with_role(tenant, "viewer"), tenant)
    editor = bearer(fleet.api[0], member_with_role(tenant, "editor"), tenant)
    sku = f"WS-{uuid.uuid4().hex[:8]}"
    with (
        notifications_socket(fleet.sockets[0], owner) as owner_first,
        notifications_socket(fleet.sockets[1], owner) as owner_second,
        notifications_socket(fleet.sockets[1], viewer) as viewer_second,
    ):
        sockets = {"owner@ws1": owner_first, "owner@ws2": owner_second, "viewer@ws2": viewer_second}

        # When a product is created through an API process: one catalog.product.created event,
        # dispatched and fanned out by whichever Celery workers take the tasks
        fanned_out_before = fan_outs(fleet.workers)
        started = time.monotonic()
        created = httpx.post(
            f"{fleet.api[1].url}{PRODUCTS}",
            json={"sku": sku, "name": "Lamp", "price": "9.99", "currency": "EUR", "stock": 1},
            headers=editor,
            timeout=TIMEOUT,
        )
        assert created.status_code == 201, created.text

        # Then it reaches every socket ...
        received = {name: first_about(ws, sku) for name, ws in sockets.items()}
        latency = time.monotonic() - started
        # ... and, listened to a while longer, none of them twice
        time.sleep(QUIET_SECONDS)
        for name, ws in sockets.items():
            received[name] += drain(ws)
            ids = [m["id"] for m in received[name] if m.get("type") == "notification"]
            assert len(ids) == len(set(ids)), (name, received[name])
            assert sum(about(m, sku) for m in received[name]) == 1, (name, received[name])

    # It went through the broker: the fan-out ran on a Celery worker, not in the API process
    assert sum(fan_outs(fleet.workers)) > sum(fanned_out_before)
    # The owner's two sockets carried the owner's one notification; the viewer has their own
    owner_ids = {
        next(m["id"] for m in received[n] if about(m, sku)) for n in ("owner@ws1", "owner@ws2")
    }
    viewer_ids = {m["id"] for m in received["viewer@ws2"] if about(m, sku)}
    assert len(owner_ids) == 1
    assert len(viewer_ids) == 1
    assert viewer_ids != owner_ids
    # And the inbox, read through the other API process, holds it once
    inbox = httpx.get(f"{fleet.api[0].url}/api/v1/notifications/", headers=owner, timeout=TIMEOUT)
    assert [n["id"] for n in inbox.json()["results"] if n["data"].get("sku") == sku] == list(
        owner_ids
    )
    print(f"\nnotification: on 3 sockets over 2 uvicorn processes in {latency:.2f}s, once each")
