"""Read replicas (kernel/replicas.py) against a real streaming replica of the test cluster and
real gunicorn processes: safe reads and GraphQL queries go to the replica, a credential that
wrote (through REST or a GraphQL mutation) reads its writes from the primary whichever process it
asks, a lagging replica is skipped, a replica stopped under load costs no request an error, and
row-level security holds there too."""

import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection

from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.servers import live_database_url
from tests.helpers import owner_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # One worker runs them all, with one replica: two base backups taken at once by two workers
    # end each other's stream (scripts/test runs pytest with --dist loadgroup).
    pytest.mark.xdist_group("pg_replica"),
]

PRODUCTS = "/api/v1/products/"
GRAPHQL = "/graphql/"
# One rate-limit token's worth: a document the GraphQL cache keeps (graphql_api/cache.py).
SKUS = "{ products(first: 25) { edges { node { sku } } } }"
# Two operations in one document, `operationName` choosing which runs.
SKUS_OR_CREATE = """
query Skus { products(first: 25) { edges { node { sku } } } }
mutation Create($input: ProductCreateInput!) { productCreate(input: $input) { sku } }
"""


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


def api_key_for(server, headers, permissions=("catalog.read",)) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/api/v1/api-keys/",
        json={"name": "reader", "permissions": list(permissions)},
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


REPLAYED_LOCK_SQL = (
    "SELECT 1 FROM pg_locks WHERE relation = 'catalog_product'::regclass"
    " AND mode = 'AccessExclusiveLock' AND granted"
)
WAITING_SQL = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock'"
)


def until(found, what: str, timeout: float = 10):
    """`found()`'s answer once it has one (polled), or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = found()
        if answer:
            return answer
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


def graphql(server, headers, query, *, operation=None, variables=None, get=False):
    """The `data` of a GraphQL request, sent by POST (or GET), which must have no errors."""
    request = {"query": query}
    if operation is not None:
        request["operationName"] = operation
    if variables is not None:
        request["variables"] = variables
    url = f"{server.url}{GRAPHQL}"
    if get:
        response = httpx.get(url, params=request, headers=headers, timeout=10)
    else:
        response = httpx.post(url, json=request, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def graphql_skus(server, headers, query=SKUS, **options) -> set[str]:
    data = graphql(server, headers, query, **options)
    return {edge["node"]["sku"] for edge in data["products"]["edges"]}


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


def test_graphql_queries_read_the_replica_and_a_mutation_reads_its_writes(
    pg_replica, live_wsgi_server_factory
):
    replica = pg_replica
    tenant = make_tenant(name="GraphQL replicated")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="60")
    owner = token_for(server, tenant)
    # Keys that have written nothing yet (the owner has: it made them).
    writer = api_key_for(server, owner, permissions=("catalog.read", "catalog.write"))
    reader = api_key_for(server, owner)
    replica.caught_up()
    time.sleep(0.2)  # past the process's last check
    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        create_product(server, owner, "BEFORE-1")

        # Queries, by POST and by GET, read the replica, which has not replayed the write; a
        # query sent by POST writes nothing, so the next one still reads the replica.
        assert "BEFORE-1" not in graphql_skus(server, writer)
        assert "BEFORE-1" not in graphql_skus(server, writer, get=True)
        assert "BEFORE-1" not in graphql_skus(server, writer, SKUS_OR_CREATE, operation="Skus")

        # A mutation writes on the primary and marks its credential, whose queries then read
        # the primary, where both writes are.
        created = graphql(
            server,
            writer,
            SKUS_OR_CREATE,
            operation="Create",
            variables={"input": {"sku": "MUTATED-1", "name": "Mutated", "price": "1.00"}},
        )
        assert created == {"productCreate": {"sku": "MUTATED-1"}}
        seen = graphql_skus(server, writer, SKUS_OR_CREATE, operation="Skus")
        assert {"BEFORE-1", "MUTATED-1"} <= seen

        # Another credential still reads the replica (and what it answers is never kept in the
        # GraphQL cache, under the version the writes moved, for the next query to find).
        assert not {"BEFORE-1", "MUTATED-1"} & graphql_skus(server, reader)
        assert not {"BEFORE-1", "MUTATED-1"} & graphql_skus(server, reader)
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
    replica.caught_up()
    assert {"BEFORE-1", "MUTATED-1"} <= graphql_skus(server, reader)


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
        assert "LAGGED-1" in graphql_skus(server, reader)
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
    answers: list[str | None] = []  # None: answered in full, else what was answered
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, headers=reader, timeout=10) as client:
            while not stop.is_set():
                # Distinct queries: cached answers would not reach the database at all.
                query = {"page_size": 100, "search": f"STEADY {len(statuses)}"}
                statuses.append(client.get(PRODUCTS, params=query).status_code)

    def graphql_load() -> None:
        # Each query answered in full: a 200 with its data and no errors.
        query = (
            "query($s: String) { products(first: 100, filter: {search: $s})"
            " { edges { node { sku } } } }"
        )
        with httpx.Client(base_url=server.url, headers=reader, timeout=10) as client:
            while not stop.is_set():
                variables = {"s": f"STEADY {len(answers)}"}
                response = client.post(GRAPHQL, json={"query": query, "variables": variables})
                body = response.json() if response.status_code == 200 else {}
                products = (body.get("data") or {}).get("products")
                complete = "errors" not in body and products is not None
                answers.append(None if complete else response.text)

    threads = [threading.Thread(target=load) for _ in range(2)]
    threads.append(threading.Thread(target=graphql_load))
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
    assert len(answers) > 10
    assert [answer for answer in answers if answer is not None] == []
    assert "STEADY-1" in skus(server, reader)
    assert "STEADY-1" in graphql_skus(server, reader)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"]["replicas"]["status"] == "down"
    assert ready.json()["checks"]["database"]["status"] == "ok"
    replica.start()


def test_a_graphql_query_whose_statement_fails_on_the_replica_is_answered_from_the_primary(
    pg_replica, live_wsgi_server_factory
):
    """A statement cancelled on the replica (as a conflict with its replay cancels one) fails
    while the connection lives on: the error is among the resolvers' errors, not raised, and
    the query is still answered again from the primary."""
    replica = pg_replica
    tenant = make_tenant(name="Cancelled")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="60")
    owner = token_for(server, tenant)
    reader = api_key_for(server, owner)
    create_product(server, owner, "KEPT-1")
    database = connection.settings_dict["NAME"]
    answer: dict = {}

    def query() -> None:
        try:
            answer["skus"] = graphql_skus(server, reader)
        except Exception as error:
            answer["error"] = error

    with psycopg.connect(live_database_url()) as primary:
        # An exclusive lock on the primary is replayed on the replica, where the query waits.
        primary.execute("LOCK TABLE catalog_product IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(live_database_url(), autocommit=True) as other:
            # A commit flushes the WAL before it, the lock's record included: else that record
            # could wait in a page not yet written, which the replica is not sent.
            other.execute("SELECT txid_current()")
        until(lambda: replica.execute(REPLAYED_LOCK_SQL, database=database), "lock replayed")
        thread = threading.Thread(target=query)
        thread.start()
        (waiting,) = until(
            lambda: replica.execute(WAITING_SQL, database=database),
            "the query waits on the replica",
        )
        replica.execute(f"SELECT pg_cancel_backend({int(waiting[0])})")
    # The lock released: the primary answers the query again.
    thread.join(30)
    assert answer == {"skus": {"KEPT-1"}}


def test_row_level_security_holds_on_the_replica(pg_replica, live_wsgi_server_factory):
    replica = pg_replica
    mine, theirs = make_tenant(name="Mine"), make_tenant(name="Theirs")
    (server,) = start_servers(live_wsgi_server_factory, replica, REPLICA_MAX_LAG_SECONDS="60")
    their_owner = token_for(server, theirs)
    create_product(server, their_owner, "THEIRS-1")
    my_reader = api_key_for(server, token_for(server, mine))
    replica.caught_up()

    assert skus(server, my_reader) == set()
    assert graphql_skus(server, my_reader) == set()
    # The same restricted role on the replica: its superuser sees the row, the API does not.
    database = connection.settings_dict["NAME"]
    rows = replica.execute("SELECT sku FROM catalog_product", database=database)
    assert ("THEIRS-1",) in rows
