"""Read replicas (kernel/replicas.py) against a real streaming replica of the test cluster and
real gunicorn processes: safe reads go to the replica, a credential that wrote reads its writes
from the primary whichever process it asks, a lagging replica is skipped, a replica stopped
under load costs no request an error, and row-level security holds there too."""

import threading
import time

import httpx
import pytest
from django.db import connection

from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.helpers import owner_of

pytestmark = pytest.mark.django_db(transaction=True)

PRODUCTS = "/api/v1/products/"


def start_servers(live_wsgi_server_factory, replica, count=1, **env):
    database = connection.settings_dict["NAME"]
    settings = {
        "DATABASE_REPLICA_URLS": replica.url(database),
        "REPLICA_CHECK_SECONDS": "0.1",
        "READ_YOUR_WRITES_SECONDS": "30",
        # Plan limits are not what these tests are about, and the load test would reach them.
        "RATELIMIT_ENABLED": "false",
        **env,
    }
    return [live_wsgi_server_factory(**settings) for _ in range(count)]


def token_for(server, tenant) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/api/v1/auth/token/",
        json={"email": owner_of(tenant).email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


def api_key_for(server, headers) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/api/v1/api-keys/",
        json={"name": "reader", "permissions": ["catalog.read"]},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Api-Key {response.json()['key']}"}


def create_product(server, headers, sku: str) -> None:
    body = {"sku": sku, "name": sku, "price": "1.00", "currency": "EUR"}
    response = httpx.post(f"{server.url}{PRODUCTS}", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text


def skus(server, headers) -> set[str]:
    response = httpx.get(
        f"{server.url}{PRODUCTS}", params={"page_size": 100}, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return {product["sku"] for product in response.json()["results"]}


def test_safe_reads_go_to_the_replica_and_a_writer_reads_its_writes_from_any_process(
    pg_replica, live_wsgi_server_factory
):
    replica = pg_replica
    tenant = make_tenant(name="Replicated")
    # Lag is tolerated here (a minute): the paused replica stays in use, so what it serves shows.
    first, second = start_servers(
        live_wsgi_server_factory, replica, count=2, REPLICA_MAX_LAG_SECONDS="60"
    )
    owner = token_for(first, tenant)
    reader = api_key_for(first, owner)
    replica.caught_up()
    time.sleep(0.2)  # past each process's last check
    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        create_product(first, owner, "WRITTEN-1")

        # Another credential reads the replica, which has not replayed the write yet (and what
        # a replica answers is never stored in the cache for others).
        assert "WRITTEN-1" not in skus(second, reader)
        assert "WRITTEN-1" not in skus(first, reader)
        # The writer, through the other process: from the primary, its write is there.
        assert "WRITTEN-1" in skus(second, owner)
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
    replica.caught_up()
    assert "WRITTEN-1" in skus(second, reader)


def test_a_lagging_replica_is_skipped_and_readyz_says_so_without_failing(
    pg_replica, live_wsgi_server_factory
):
    replica = pg_replica
    tenant = make_tenant(name="Lagging")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="1")
    owner = token_for(server, tenant)
    reader = api_key_for(server, owner)
    replica.caught_up()
    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        create_product(server, owner, "LAGGED-1")
        time.sleep(1.5)  # the replica is now more than a second behind what it received
        # Not served stale: the lagging replica is skipped, the primary answers.
        assert "LAGGED-1" in skus(server, reader)
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["replicas"]["status"] == "down"
        assert "replica0 lagging" in ready.json()["checks"]["replicas"]["reason"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'tenantapi_db_replica_skipped_total{alias="replica0",reason="lagging"}' in metrics
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")


def test_stopping_the_replica_under_load_costs_no_request_an_error(
    pg_replica, live_wsgi_server_factory
):
    replica = pg_replica
    tenant = make_tenant(name="Failing over")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="30")
    owner = token_for(server, tenant)
    reader = api_key_for(server, owner)
    create_product(server, owner, "STEADY-1")
    replica.caught_up()

    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, headers=reader, timeout=10) as client:
            while not stop.is_set():
                # Distinct queries: cached answers would not reach the database at all.
                query = {"page_size": 100, "search": f"STEADY {len(statuses)}"}
                statuses.append(client.get(PRODUCTS, params=query).status_code)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    replica.stop()
    assert not replica.is_running()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(30)

    assert len(statuses) > 20
    assert set(statuses) == {200}
    assert "STEADY-1" in skus(server, reader)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"]["replicas"]["status"] == "down"
    assert ready.json()["checks"]["database"]["status"] == "ok"
    replica.start()


def test_row_level_security_holds_on_the_replica(pg_replica, live_wsgi_server_factory):
    replica = pg_replica
    mine, theirs = make_tenant(name="Mine"), make_tenant(name="Theirs")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="60")
    their_owner = token_for(server, theirs)
    create_product(server, their_owner, "THEIRS-1")
    my_reader = api_key_for(server, token_for(server, mine))
    replica.caught_up()

    assert skus(server, my_reader) == set()
    # The same restricted role on the replica: its superuser sees the row, the API does not.
    database = connection.settings_dict["NAME"]
    rows = replica.execute("SELECT sku FROM catalog_product", database=database)
    assert ("THEIRS-1",) in rows
