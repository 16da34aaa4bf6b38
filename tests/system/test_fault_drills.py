"""Fault drills: real server processes and a real Celery worker, through the faults of production.

Each drill breaks one dependency the way it breaks in production (a stopped process, killed
database sessions, a killed worker, cut TCP connections) and checks three things: what users see
during the fault (an answer, degraded or a 503 problem, never a 500 or a hang: every client call
has a timeout), that the service recovers without a restart, and that nothing it accepted (a
write, a job, a notification) is lost. Where the fault is a stop, it is a throwaway server's:
the shared Redis and PostgreSQL of the suite are never touched.
"""

import json
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

import httpx
import kombu
import psycopg
import pytest
import redis
from django.conf import settings
from websockets.sync.client import ClientConnection, connect

from catalog.models import Product
from config.celery import app as celery_app
from kernel.context import tenant_context
from kernel.events import Event
from kernel.models import OutboxEvent
from kernel.tasks import event_dispatch_task, outbox_relay_task
from notifications.models import Notification
from notifications.realtime import user_group
from notifications.tasks import notifications_fan_out_task
from tests.catalog_helpers import PRODUCTS, product_url
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.brokers import Broker
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.servers import (
    LOOPBACK,
    START_TIMEOUT,
    LiveServer,
    RedisServer,
    live_database_url,
    wait_until,
)
from tests.helpers import ME, TOKEN, member_with_role, outcome, owner_of, sent_through_the_broker

pytestmark = pytest.mark.django_db(transaction=True)

# Every request of a drill is bounded: a hang fails the drill instead of stalling the suite.
CLIENT_TIMEOUT = 10.0
WAIT_SECONDS = 20.0
NOTIFICATIONS_WS = "/ws/v1/notifications/"
NOTIFICATIONS = "/api/v1/notifications/"
RELAY_TASK = outbox_relay_task.name


# --- helpers ---------------------------------------------------------------------------------


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Waited {timeout:.0f}s for {what}")
        time.sleep(0.05)


@contextmanager
def signed_in(server: LiveServer, user, tenant) -> Iterator[httpx.Client]:
    """A client of `server` with `user`'s access token to `tenant`."""
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            TOKEN, json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
        )
        assert response.status_code == 200, response.text
        http.headers["Authorization"] = f"Bearer {response.json()['access']}"
        yield http


def product_body(sku: str) -> dict:
    return {"sku": sku, "name": f"Product {sku}", "price": "9.50"}


@contextmanager
def open_socket(server: LiveServer, http: httpx.Client) -> Iterator[ClientConnection]:
    """An authenticated socket, closed on leaving the block (websockets wants `connect()` used
    as a context manager)."""
    token = http.headers["Authorization"].removeprefix("Bearer ")
    url = f"{server.ws_url}{NOTIFICATIONS_WS}?token={token}"
    with connect(url, open_timeout=CLIENT_TIMEOUT) as ws:
        assert receive(ws) == {"type": "authenticated"}
        yield ws


def receive(ws: ClientConnection) -> dict:
    return json.loads(ws.recv(timeout=CLIENT_TIMEOUT))


def resume(ws: ClientConnection, after: str | None) -> list[dict]:
    """The notifications a `resume` replays, up to its `resumed` line (checked for the count)."""
    ws.send(json.dumps({"type": "resume", "after": after}))
    replayed = []
    while (message := receive(ws))["type"] == "notification":
        replayed.append(message)
    assert message == {"type": "resumed", "count": len(replayed)}
    return replayed


def cut(ws: ClientConnection) -> None:
    """Drop the connection as a lost network does: a TCP reset, no close frame, no FIN."""
    raw = ws.socket
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def error_lines(server: LiveServer) -> list[str]:
    return [
        line
        for line in server.log().splitlines()
        if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line
    ]


def restart_redis(server: RedisServer) -> None:
    """Start redis-server again on the port it had, as an orchestrator restarting it would."""
    assert not server.is_running()
    command = [
        "redis-server",
        "--port", str(server.port),
        "--bind", LOOPBACK,
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    server.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(server._answers, server.process, START_TIMEOUT), "redis did not restart"


# --- Redis stops and restarts -----------------------------------------------------------------


def test_redis_stops_and_restarts(
    throwaway_redis: RedisServer, live_asgi_server_factory: Callable[..., LiveServer]
):
    """Redis (cache, channel layer, rate limiter, broker) stops, then comes back.

    During the outage users see the API answer from the database: reads are 200 (uncached),
    writes are 201/200 and stored, nothing is a 500 and nothing hangs; /readyz is a 503 naming
    cache, channel_layer and broker, /healthz stays 200. After Redis is back, the same server
    process (no restart) is ready again, the write made during the outage reads back, and a
    WebSocket connects, replays the notification stored during the outage and receives a live
    one. Tasks run inline in the server (the test settings), so the outage's notification is
    stored in the database; the push that could not reach the channel layer is what `resume`
    makes good.
    """
    tenant = make_tenant(name="Redis Drill")
    server = live_asgi_server_factory(
        REDIS_URL=throwaway_redis.url(0), CELERY_BROKER_URL=throwaway_redis.url(1)
    )
    owner = owner_of(tenant)
    # The actor of an event is not notified of it: a second member receives the notifications.
    reader = member_with_role(tenant, "viewer")
    with signed_in(server, owner, tenant) as http:
        existing = http.post(PRODUCTS, json=product_body("BEFORE-1"))
        assert existing.status_code == 201, existing.text
        assert http.get(PRODUCTS).status_code == 200  # warms the cache
        assert http.get("/readyz").status_code == 200

        # When Redis stops
        throwaway_redis.stop()

        # Then reads answer from the database
        me = http.get(ME)
        listed = http.get(PRODUCTS)
        one = http.get(product_url(existing.json()["id"]))
        # ...writes are accepted
        created = http.post(PRODUCTS, json=product_body("DURING-1"))
        changed = http.patch(
            product_url(existing.json()["id"]),
            json={"name": "Renamed during the outage"},
            headers={"If-Match": existing.headers.get("ETag", "*")},
        )
        # ...and readiness names what is down while liveness holds
        ready = http.get("/readyz")
        alive = http.get("/healthz")

        assert me.status_code == 200, me.text
        assert listed.status_code == 200, listed.text
        assert {p["sku"] for p in listed.json()["results"]} == {"BEFORE-1"}
        assert one.status_code == 200, one.text
        assert created.status_code == 201, created.text
        assert changed.status_code == 200, changed.text
        assert ready.status_code == 503, ready.text
        down = {name for name, check in ready.json()["checks"].items() if check["status"] == "down"}
        assert down == {"cache", "channel_layer", "broker"}
        assert alive.status_code == 200

        # When Redis is back (empty: a restart loses what it held), with the app left running
        restart_redis(throwaway_redis)

        # Then everything is back without a restart of the app
        eventually(lambda: http.get("/readyz").status_code == 200, "readiness after the restart")
        after = http.get(PRODUCTS)
        assert after.status_code == 200, after.text
        assert {p["sku"] for p in after.json()["results"]} == {"BEFORE-1", "DURING-1"}
        assert http.get(product_url(existing.json()["id"])).json()["name"] == (
            "Renamed during the outage"
        )
        # ...and a member's socket replays what was stored for them during the outage (the
        # notifications of the two writes), then gets the push of a write made now.
        with (
            signed_in(server, reader, tenant) as reader_http,
            open_socket(server, reader_http) as ws,
        ):
            replayed = resume(ws, after=None)
            assert {m["topic"] for m in replayed} >= {"catalog.product.created"}
            assert any(m["data"].get("sku") == "DURING-1" for m in replayed), replayed
            assert http.post(PRODUCTS, json=product_body("AFTER-1")).status_code == 201
            live = receive(ws)
            assert live["type"] == "notification"
            assert live["data"].get("sku") == "AFTER-1", live
    # The only error lines are Django's for the 503s of /readyz, which an operator should see.
    assert [line for line in error_lines(server) if "/readyz" not in line] == []


# --- The broker refuses a write's event -------------------------------------------------------


def test_a_write_during_a_broker_outage_is_notified_later(
    throwaway_redis: RedisServer, live_asgi_server_factory: Callable[..., LiveServer]
):
    """The Celery broker stops while the API takes a write; its event is delivered later, once.

    Here the server sends its tasks through the broker, as in production (not inline as the test
    settings do), and only the broker is the throwaway Redis. During the outage the write is a
    201 and its event waits in the outbox (kernel/events/outbox.py), stored by the write's own
    transaction; the send the broker refused is logged as a warning, nothing is a 500 or an
    error line. Once the broker is back, the relay (the beat job, sent by hand here) hands the
    event to a worker and the member's notification appears. A second relay run, and the
    original task arriving after all, deliver nothing more: the notification exists once.
    """
    tenant = make_tenant(name="Broker Drill")
    owner = owner_of(tenant)
    reader = member_with_role(tenant, "viewer")
    server = live_asgi_server_factory(
        CELERY_BROKER_URL=throwaway_redis.url(1),
        CELERY_TASK_ALWAYS_EAGER="false",
        # The outage is short: its event is due for the relay at once (the default waits 5 min).
        OUTBOX_RELAY_DELAY_SECONDS="0",
    )
    with signed_in(server, owner, tenant) as http:
        # When the broker stops and a write is made
        throwaway_redis.stop()
        created = http.post(PRODUCTS, json=product_body("OUTAGE-1"))

        # Then the write is accepted and stored, and its event waits in the outbox
        assert created.status_code == 201, created.text
        assert http.get(product_url(created.json()["id"])).status_code == 200
    with outcome():
        (waiting,) = OutboxEvent.objects.filter(tenant_id=tenant.id)
    assert waiting.topic == "catalog.product.created"
    assert waiting.message["data"]["sku"] == "OUTAGE-1"
    assert "event_send_failed_relay_will_retry" in server.log()

    # When the broker is back, with a worker on it, and the relay runs
    restart_redis(throwaway_redis)
    queue = f"tests-outbox-{uuid.uuid4().hex[:12]}"
    worker = CeleryWorker(
        queue=queue,
        env={
            **worker_environment(),
            "CELERY_BROKER_URL": throwaway_redis.url(1),
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "OUTBOX_RELAY_DELAY_SECONDS": "0",
        },
    )
    worker.start()
    try:
        # A connection of its own: Celery prefers CELERY_BROKER_URL (the suite's) to a URL
        # given to an app. send_task always publishes: say so, rather than have Celery warn
        # that eager is ignored.
        with (
            sent_through_the_broker(),
            kombu.Connection(throwaway_redis.url(1)) as broker,
            signed_in(server, reader, tenant) as reader_http,
        ):
            relay = celery_app.send_task(RELAY_TASK, queue=queue, connection=broker)
            worker.wait_for_task(relay.id)

            # Then the member is notified of the write made during the outage
            def notified() -> list[dict]:
                response = reader_http.get(NOTIFICATIONS)
                assert response.status_code == 200, response.text
                return response.json()["results"]

            def stored() -> bool:
                with outcome():
                    return Notification.objects.filter(tenant_id=tenant.id).exists()

            eventually(stored, "the notification of the outage's write")
            assert [n["data"]["sku"] for n in notified()] == ["OUTAGE-1"]
            with outcome():
                assert not OutboxEvent.objects.filter(tenant_id=tenant.id).exists()

            # ...once, though the relay runs again and the original task turns up after all
            again = celery_app.send_task(RELAY_TASK, queue=queue, connection=broker)
            late = celery_app.send_task(
                event_dispatch_task.name,
                kwargs={"event": waiting.message, "from_outbox": True},
                queue=queue,
                connection=broker,
            )
            worker.wait_for_task(again.id)
            worker.wait_for_task(late.id)
            assert worker.find(event="event_already_dispatched", event_id=waiting.message["id"])
            assert [n["data"]["sku"] for n in notified()] == ["OUTAGE-1"]
    finally:
        worker.stop()
    assert error_lines(server) == []
    with outcome():
        delivered = Notification.objects.filter(event_id=waiting.message["id"])
        assert [n.user_id for n in delivered] == [reader.id]


# --- PostgreSQL sessions terminated -----------------------------------------------------------


def terminate_backends(application_name: str) -> int:
    """What a PostgreSQL restart or failover does to a server's sessions, done from a superuser
    session of the test: only the sessions of the test database that the drill's server opened
    (named by `application_name`), so nothing else running against PostgreSQL is touched."""
    with psycopg.connect(live_database_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = %s",
            [application_name],
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


def test_postgresql_sessions_are_terminated(live_asgi_server_factory: Callable[..., LiveServer]):
    """Every database session of a running server is killed, as a PostgreSQL restart does.

    Users see at most one failed request: the one whose session died under it, answered with a
    503 `service-unavailable` problem and `Retry-After` (it was a 500 before the problem mapping
    of OperationalError/InterfaceError in kernel/problems.py). Its write was not applied (each
    request is one transaction, rolled back with the session), so nothing accepted is lost, and
    the retried write is stored. The requests after it answer as before from the same server
    process: Django discards the broken connection and its health checks replace the others.
    """
    tenant = make_tenant(name="Postgres Drill")
    application_name = f"fault-drill-{uuid.uuid4().hex[:8]}"
    server = live_asgi_server_factory(
        DATABASE_URL=f"{live_database_url()}?application_name={application_name}"
    )
    with signed_in(server, owner_of(tenant), tenant) as http:
        assert http.post(PRODUCTS, json=product_body("PG-1")).status_code == 201
        assert http.get(PRODUCTS).status_code == 200

        # When every session of the server is terminated, one of them in the middle of a write
        # (held at its insert by a lock, so that the termination lands inside the request)
        with (
            psycopg.connect(live_database_url()) as blocker,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            blocker.execute(f'LOCK TABLE "{Product._meta.db_table}" IN SHARE MODE')
            in_flight = pool.submit(http.post, PRODUCTS, json=product_body("PG-2"))
            eventually(waiting_on_a_lock, "the write to reach its insert")
            assert terminate_backends(application_name) >= 1
            blocker.rollback()
            interrupted = in_flight.result()

        # Then that request is a 503 problem, not a 500, and its write was not applied
        assert interrupted.status_code == 503, interrupted.text
        assert interrupted.headers["Content-Type"] == "application/problem+json"
        assert interrupted.json()["type"].endswith("/service-unavailable")
        # ...and the same process answers the next requests: the write retried, reads, readiness
        retried = http.post(PRODUCTS, json=product_body("PG-2"))
        answers = [http.get(ME), http.get(PRODUCTS), http.get("/readyz")]
        assert retried.status_code == 201, retried.text
        assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
        assert sorted(p["sku"] for p in answers[1].json()["results"]) == ["PG-1", "PG-2"]
    assert "Unhandled exception" not in server.log()


# --- A Celery worker killed mid-task ----------------------------------------------------------


@pytest.fixture
def drill_workers(transactional_db, broker: Broker) -> Iterator[Callable[[], CeleryWorker]]:
    """Prefork workers on a queue of this test's own, on each broker in turn (Redis, RabbitMQ).
    On Redis they share bookkeeping keys of their own, so that a short visibility timeout
    (unacknowledged messages come back after 2 s) never touches other workers' messages; RabbitMQ
    hands a message back as soon as the connection of the worker holding it closes."""
    queue = f"tests-drill-{uuid.uuid4().hex[:12]}"
    environment = {
        **worker_environment(),
        **broker.worker_env(redelivering=True),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    started: list[CeleryWorker] = []

    def start() -> CeleryWorker:
        worker = CeleryWorker(queue=queue, env=environment, pool="prefork")
        started.append(worker)
        worker.start()
        return worker

    start.queue = queue  # type: ignore[attr-defined]
    try:
        with sent_through_the_broker(), broker.publishing():
            yield start
    finally:
        for worker in reversed(started):
            worker.stop()


def waiting_on_a_lock() -> bool:
    with psycopg.connect(live_database_url(), autocommit=True) as admin:
        (count,) = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return count > 0


def test_a_worker_killed_in_the_middle_of_a_notification_fan_out(drill_workers):
    """The worker running a notification fan-out is killed (SIGKILL, pool and all) mid-task.

    Users see nothing of it but a delay: the task was acknowledged late (acks_late and
    CELERY_TASK_REJECT_ON_WORKER_LOST), so the broker hands it to the next worker, which
    completes it: Redis once the visibility timeout has passed, RabbitMQ as soon as the killed
    worker's connection closes. Its notification exists exactly once: the killed attempt's
    transaction never committed, and the fan-out is idempotent per (tenant, user, event).
    """
    tenant = make_tenant(name="Worker Drill")
    owner = owner_of(tenant)
    first = drill_workers()
    event = Event(
        id=uuid.uuid4().hex,
        topic="drill.worker.killed",
        data={"n": 1},
        tenant_id=str(tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=datetime.now(tz=UTC).isoformat(),
    )
    # Given a fan-out that will be stopped at its insert: the table is locked against writes
    with psycopg.connect(live_database_url()) as blocker:
        blocker.execute(f'LOCK TABLE "{Notification._meta.db_table}" IN SHARE MODE')
        with tenant_context(tenant.id):  # the tenant travels in the message
            celery_app.send_task(
                notifications_fan_out_task.name,
                kwargs={"event": event.as_message()},
                queue=drill_workers.queue,  # type: ignore[attr-defined]
            )
        eventually(waiting_on_a_lock, "the fan-out to reach its insert")

        # When the worker is killed in the middle of it, and the lock goes
        first.kill()
        blocker.rollback()

    # Then a new worker takes the unacknowledged task and completes it, once
    second = drill_workers()
    second.wait_for(
        lambda r: r.get("logger") == "celery.app.trace" and "succeeded" in str(r.get("event")),
        waiting_for="the fan-out to succeed on the second worker",
    )
    with outcome():
        stored = list(Notification.objects.filter(event_id=event.id))
    assert [(n.user_id, n.topic) for n in stored] == [(owner.id, "drill.worker.killed")]


# --- WebSocket clients dropped ----------------------------------------------------------------


def group_size(client: redis.Redis, group: str) -> int:
    """How many channels the Redis channel layer holds in `group` (channels-redis' sorted set)."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "asgi")
    return client.zcard(f"{prefix}:group:{group}")


def test_websocket_clients_dropped_without_a_close_frame(
    live_asgi_server_factory: Callable[..., LiveServer],
):
    """Connected clients lose their TCP connections abruptly (a reset, no close frame).

    Users see their socket drop; the notifications created while they are away are stored, and a
    reconnect with `resume` after the last one received replays them in order, each once, then
    live ones follow. The server process stays healthy (no error logged, /healthz 200, new sockets
    accepted) and removes the dropped sockets from their channel-layer groups at once.
    """
    if not settings.REDIS_URL:
        pytest.fail("This drill needs the Redis channel layer (REDIS_URL).")
    tenant = make_tenant(name="Socket Drill")
    owner = owner_of(tenant)
    readers = [member_with_role(tenant, "viewer") for _ in range(2)]
    server = live_asgi_server_factory()
    layer_redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=CLIENT_TIMEOUT)
    with (
        signed_in(server, owner, tenant) as writer,
        signed_in(server, readers[0], tenant) as first_http,
        signed_in(server, readers[1], tenant) as second_http,
        layer_redis,
        ExitStack() as dropped,
    ):
        sockets = [
            dropped.enter_context(open_socket(server, http)) for http in (first_http, second_http)
        ]
        groups = [user_group(tenant.id, reader.id) for reader in readers]
        # Given both readers received a first notification live
        assert writer.post(PRODUCTS, json=product_body("WS-0")).status_code == 201
        last_seen = [receive(ws) for ws in sockets]
        assert [m["data"]["sku"] for m in last_seen] == ["WS-0", "WS-0"]
        assert [group_size(layer_redis, group) for group in groups] == [1, 1]

        # When both connections are cut, and notifications are created meanwhile
        for ws in sockets:
            cut(ws)
        for n in range(1, 4):
            assert writer.post(PRODUCTS, json=product_body(f"WS-{n}")).status_code == 201

        # Then the server let go of the dropped sockets and stays healthy
        eventually(
            lambda: [group_size(layer_redis, group) for group in groups] == [0, 0],
            "the dropped sockets to leave their groups",
        )
        assert writer.get("/healthz").status_code == 200

        # And each reader's reconnect replays what they missed, in order, once, then live ones
        with (
            open_socket(server, first_http) as first_again,
            open_socket(server, second_http) as second_again,
        ):
            again = [first_again, second_again]
            for ws, seen in zip(again, last_seen, strict=True):
                replayed = resume(ws, after=seen["id"])
                assert [m["data"]["sku"] for m in replayed] == ["WS-1", "WS-2", "WS-3"]
                assert len({m["id"] for m in replayed}) == 3
            assert writer.post(PRODUCTS, json=product_body("WS-live")).status_code == 201
            for ws in again:
                assert receive(ws)["data"]["sku"] == "WS-live"
                # ...and nothing else: the next message is the answer to a ping
                assert request_pong(ws)
    assert error_lines(server) == []


def request_pong(ws: ClientConnection) -> bool:
    ws.send(json.dumps({"type": "ping"}))
    return receive(ws) == {"type": "pong"}
