"""PgBouncer in transaction mode in front of PostgreSQL (docs/scale-out.md, "PgBouncer in
transaction mode").

A pooler in transaction mode hands a server connection to a client for one transaction only: the
next transaction of the same client may run on another server connection, and the server
connection goes on to other clients carrying whatever the session set. The first tests show that
hazard on a real PgBouncer (a session-level setting follows the server connection, not the
client; a psycopg prepared statement or a held cursor is not found on the other one). The others
run the application under gunicorn behind it, with a pool of two server connections for more
Django connections than that, and prove that every transaction carries the restricted role and
its own tenant, set by itself (`set_config(..., true)`, kernel/tenancy/dbbackend/base.py),
whatever the server connection under it and whatever a previous session left there.

What each transaction ran as is recorded by a trigger the tests put on the roles table: the
role (`current_user`), the server connection (`pg_backend_pid()`) and the settings row security
reads, for every role the API creates.
"""

import csv
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from catalog.models import Product
from kernel.context import tenant_context
from kernel.tenancy.dbbackend.base import APPLY_SCOPE_SQL
from kernel.tenancy.models import Role, Tenant
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.pgbouncer import PgBouncer
from tests.fixtures.servers import LiveServer, server_environment, start_live_wsgi_server
from tests.helpers import API, owner_of

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = f"{API}/roles/"
EXPORT = f"{API}/products/export/"
# The raw client connections of these tests name themselves, so that the application's own
# client connections can be told apart in PgBouncer's SHOW CLIENTS.
PROBE = "pgbouncer-test-probe"
APP_ROLE = settings.DATABASE_APP_ROLE
ROUNDS = 40  # per tenant, in the test under load: 3 requests each


# --- driving the pooler's server connections by hand ---------------------------------------------


def backend_of(client: psycopg.Connection) -> int:
    return client.execute("SELECT pg_backend_pid()").fetchone()[0]


def server_connections(bouncer: PgBouncer, *session_statements: str) -> tuple[int, int]:
    """Open the pool's two server connections (two clients, each in a transaction at once) and
    return their backend pids; each statement given runs on both at session level, and stays
    there after the transaction, as a careless session would leave it."""
    assert bouncer.pool_size == 2
    clients = [bouncer.connect(application_name=PROBE) for _ in range(2)]
    try:
        backends = []
        for client in clients:
            backends.append(backend_of(client))
            for statement in session_statements:
                client.execute(statement)  # not SET LOCAL: it outlives the commit
        for client in clients:
            client.commit()
    finally:
        for client in clients:
            client.close()
    assert backends[0] != backends[1]
    return backends[0], backends[1]


@contextmanager
def holding(bouncer: PgBouncer, backend: int) -> Iterator[psycopg.Connection]:
    """A client whose open transaction holds the server connection `backend`: until the block
    ends, every other client's transaction runs on the pool's other server connection."""
    opened: list[psycopg.Connection] = []
    try:
        holder = None
        for _ in range(bouncer.pool_size):
            # Not autocommit: the first statement opens a transaction, which keeps its server
            # connection; a client that got the other one keeps it busy while the next one asks.
            client = bouncer.connect(application_name=PROBE)
            opened.append(client)
            if backend_of(client) == backend:
                holder = client
                break
        assert holder is not None, f"no client was given server connection {backend}"
        for client in opened:
            if client is not holder:
                client.rollback()
        yield holder
    finally:
        for client in opened:
            # Ended first: PgBouncer closes a server connection whose client left mid-transaction.
            client.rollback()
            client.close()


def the_other(backends: tuple[int, int], backend: int) -> int:
    return backends[1] if backend == backends[0] else backends[0]


# --- the trigger that records what each write transaction ran as --------------------------------


@dataclass(frozen=True)
class Recorded:
    role_name: str
    row_tenant: str
    who: str
    backend: int
    tenant_setting: str | None
    operator_setting: str | None


@pytest.fixture
def recorded() -> Iterator[Callable[[], list[Recorded]]]:
    """A trigger on the roles table that records, for each row inserted, the role the
    transaction ran as, its server connection and the settings row security reads."""
    statements = (
        "CREATE TABLE pgbouncer_probe (id bigint GENERATED ALWAYS AS IDENTITY, role_name text,"
        " row_tenant uuid, who name, backend int, tenant_setting text, operator_setting text)",
        f'GRANT INSERT ON pgbouncer_probe TO "{APP_ROLE}"',
        "CREATE FUNCTION pgbouncer_probe_record() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO pgbouncer_probe (role_name, row_tenant, who, backend,"
        " tenant_setting, operator_setting) VALUES (NEW.name, NEW.tenant_id, current_user,"
        " pg_backend_pid(), current_setting('app.tenant_id', true),"
        " current_setting('app.operator_scope', true)); RETURN NEW; END $$",
        f"CREATE TRIGGER pgbouncer_probe AFTER INSERT ON {Role._meta.db_table}"
        " FOR EACH ROW EXECUTE FUNCTION pgbouncer_probe_record()",
    )
    with connection.schema_owner(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)

    def rows() -> list[Recorded]:
        with connection.schema_owner(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT role_name, row_tenant::text, who, backend, tenant_setting,"
                " operator_setting FROM pgbouncer_probe ORDER BY id"
            )
            return [Recorded(*row) for row in cursor.fetchall()]

    yield rows
    with connection.schema_owner(), connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER pgbouncer_probe ON {Role._meta.db_table}")
        cursor.execute("DROP FUNCTION pgbouncer_probe_record()")
        cursor.execute("DROP TABLE pgbouncer_probe")


# --- the application behind the pooler ------------------------------------------------------------


@pytest.fixture
def alpha() -> Tenant:
    return make_tenant(name="Alpha", plan_code="pro")


@pytest.fixture
def beta() -> Tenant:
    return make_tenant(name="Beta", plan_code="pro")


@contextmanager
def api_behind(
    bouncer: PgBouncer, directory: Path, *, workers: int, **env: str
) -> Iterator[LiveServer]:
    """gunicorn as the API is deployed, its DATABASE_URL the pooler, with persistent Django
    connections: each worker's one connection runs transaction after transaction through it."""
    environment = server_environment(
        DATABASE_URL=bouncer.url(),
        DATABASE_CONN_MAX_AGE="600",
        # Hundreds of requests a tenant within seconds: more than its plan's rate allows, and
        # the limits are not what these tests are about.
        RATELIMIT_ENABLED="false",
        **env,
    )
    server = start_live_wsgi_server(directory, environment, workers=workers)
    try:
        yield server
    finally:
        server.stop()


def signed_in(http: httpx.Client, tenant: Tenant) -> dict[str, str]:
    response = http.post(
        f"{API}/auth/token/",
        json={"email": owner_of(tenant).email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


def builtin_role_ids(tenant: Tenant) -> set[str]:
    with tenant_context(tenant.id):
        return {str(pk) for pk in Role.objects.values_list("pk", flat=True)}


def app_clients(bouncer: PgBouncer) -> list[tuple[int, str]]:
    """The application's client connections to the pooler: (port, connected at)."""
    return sorted(
        (client["port"], client["connect_time"])
        for client in bouncer.show("CLIENTS")
        if client["database"] == bouncer.database and client["application_name"] != PROBE
    )


def assert_no_pooling_errors(server: LiveServer) -> None:
    log = server.log()
    for symptom in ("prepared statement", "cursor", "InFailedSqlTransaction", "Traceback"):
        assert symptom not in log, log[-3000:]


# --- the hazard is real ---------------------------------------------------------------------------


def test_a_session_level_setting_stays_on_the_server_connection_and_leaks_to_another_client(
    pgbouncer, alpha
):
    first, second = server_connections(pgbouncer)
    client = pgbouncer.connect(application_name=PROBE, autocommit=True)

    with holding(pgbouncer, second):
        assert backend_of(client) == first
        # What a per-session design would do: the tenant and the role for the session
        client.execute(f"SET app.tenant_id = '{alpha.id}'")
        client.execute(f'SET ROLE "{APP_ROLE}"')

    with holding(pgbouncer, first) as someone_else:
        # Another client, which named no tenant, is given that server connection: it runs as the
        # restricted role in Alpha's scope, and reads Alpha's rows
        assert someone_else.execute(
            "SELECT current_user, current_setting('app.tenant_id', true)"
        ).fetchone() == (APP_ROLE, str(alpha.id))
        tenants_seen = someone_else.execute(
            f"SELECT DISTINCT tenant_id::text FROM {Role._meta.db_table}"  # noqa: S608
        ).fetchall()
        assert tenants_seen == [(str(alpha.id),)]

        # while the client's own next transaction runs on the other server connection, as the
        # login role (a superuser here, to which row security does not apply), in no scope
        assert backend_of(client) == second
        assert client.execute(
            "SELECT current_user, current_setting('app.tenant_id', true)"
        ).fetchone() == (connection.settings_dict["USER"], None)
    client.close()


def test_the_settings_our_transactions_make_die_with_them_on_whichever_server_connection(
    pgbouncer, alpha
):
    alpha_roles = len(builtin_role_ids(alpha))
    first, second = server_connections(pgbouncer)
    client = pgbouncer.connect(application_name=PROBE, autocommit=True)

    # The statement the database backend opens every transaction with
    with holding(pgbouncer, second), client.transaction():
        client.execute(APPLY_SCOPE_SQL, [APP_ROLE, str(alpha.id), ""])
        assert backend_of(client) == first
        assert client.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        assert client.execute(
            f"SELECT count(*) FROM {Role._meta.db_table}"  # noqa: S608
        ).fetchone() == (alpha_roles,)

    with holding(pgbouncer, first) as someone_else:
        # Nothing of it is left on that server connection for the next client: under the
        # restricted role and no scope of its own, it sees no tenant's row
        assert someone_else.execute(
            "SELECT current_user, current_setting('app.tenant_id', true)"
        ).fetchone() == (connection.settings_dict["USER"], "")
        someone_else.execute(f'SET LOCAL ROLE "{APP_ROLE}"')
        assert someone_else.execute(
            f"SELECT count(*) FROM {Role._meta.db_table}"  # noqa: S608
        ).fetchone() == (0,)
    client.close()


def test_psycopg_prepared_statements_are_lost_across_server_connections_so_none_are_made(
    pgbouncer,
):
    first, second = server_connections(pgbouncer)
    # psycopg's default: the sixth execution of a query prepares it on the server connection
    client = pgbouncer.connect(application_name=PROBE, autocommit=True)
    assert client.prepare_threshold == 5

    with holding(pgbouncer, second):
        for n in range(client.prepare_threshold + 2):
            assert client.execute("SELECT %s::int", [n]).fetchone() == (n,)
        assert backend_of(client) == first
    with (
        holding(pgbouncer, first),
        pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"),
    ):
        client.execute("SELECT %s::int", [99])
    client.close()

    # The application's connections prepare nothing: Django turns psycopg's preparing off unless
    # OPTIONS["prepare_threshold"] says otherwise (and its client-side binding cursors never
    # prepare), which the settings leave alone. The tests under load below run the same queries
    # hundreds of times on both server connections.
    assert "prepare_threshold" not in settings.DATABASES["default"]["OPTIONS"]
    assert connection.get_connection_params()["prepare_threshold"] is None
    assert settings.DATABASES["default"]["OPTIONS"].get("server_side_binding") is not True


def test_a_cursor_held_past_its_transaction_is_not_found_on_the_other_server_connection(
    pgbouncer,
):
    """What Django declares for `.iterator()` outside a transaction (WITH HOLD), which is why
    every `.iterator()` of the project runs inside one."""
    first, second = server_connections(pgbouncer)
    client = pgbouncer.connect(application_name=PROBE, autocommit=True)
    with holding(pgbouncer, second):
        client.execute("DECLARE held NO SCROLL CURSOR WITH HOLD FOR SELECT generate_series(1, 9)")
        assert backend_of(client) == first
    with (
        holding(pgbouncer, first),
        pytest.raises(psycopg.errors.InvalidCursorName, match="does not exist"),
    ):
        client.execute("FETCH 3 FROM held")
    client.close()


# --- the application is immune --------------------------------------------------------------------


def test_one_django_connection_runs_its_transactions_on_both_server_connections_in_its_own_scope(
    pgbouncer, alpha, beta, recorded, tmp_path
):
    # Both server connections carry a session's leftovers: Beta's tenant and the operator scope,
    # under which row security would show every tenant's rows
    backends = server_connections(
        pgbouncer, f"SET app.tenant_id = '{beta.id}'", "SET app.operator_scope = 'on'"
    )
    alpha_builtin = builtin_role_ids(alpha)
    beta_role = next(iter(builtin_role_ids(beta)))

    with (
        api_behind(pgbouncer, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        headers = signed_in(http, alpha)
        clients_before = app_clients(pgbouncer)
        planned = [backends[0], backends[1], backends[0], backends[1]]
        for n, backend in enumerate(planned):
            # The other client holds the other server connection: this request runs on `backend`
            with holding(pgbouncer, the_other(backends, backend)):
                created = http.post(
                    ROLES,
                    json={"name": f"A-{n}", "permissions": ["catalog.read"]},
                    headers=headers,
                )
                assert created.status_code == 201, created.text
                listed = http.get(ROLES, params={"page_size": 100}, headers=headers)
                assert listed.status_code == 200, listed.text
                ids = {role["id"] for role in listed.json()["results"]}
                assert alpha_builtin <= ids
                assert {role["name"] for role in listed.json()["results"]} >= {f"A-{n}"}
                assert len(ids) == len(alpha_builtin) + n + 1  # Alpha's roles, no one else's
                other = http.get(f"{ROLES}{beta_role}/", headers=headers)
                assert other.status_code == 404, other.text
        clients_after = app_clients(pgbouncer)
        assert_no_pooling_errors(server)

    # One gunicorn worker, one persistent Django connection, from first request to last
    assert len(clients_before) == 1
    assert clients_after == clients_before
    # whose consecutive transactions ran on one server connection, then the other, each as the
    # restricted role, in Alpha's scope and not the operator's, as it set them itself
    assert recorded() == [
        Recorded(
            role_name=f"A-{n}",
            row_tenant=str(alpha.id),
            who=APP_ROLE,
            backend=backend,
            tenant_setting=str(alpha.id),
            operator_setting="",
        )
        for n, backend in enumerate(planned)
    ]


def test_two_tenants_at_a_high_rate_through_two_server_connections_never_see_each_other(
    pgbouncer, alpha, beta, recorded, tmp_path
):
    backends = server_connections(pgbouncer, "SET app.operator_scope = 'on'")
    builtin = {alpha.id: builtin_role_ids(alpha), beta.id: builtin_role_ids(beta)}
    prefix = {alpha.id: "A-", beta.id: "B-"}
    workers = 3  # persistent Django connections, for a pool of two server connections

    with (
        api_behind(pgbouncer, tmp_path, workers=workers) as server,
        httpx.Client(
            base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=16)
        ) as http,
    ):
        headers = {alpha.id: signed_in(http, alpha), beta.id: signed_in(http, beta)}
        other = {alpha.id: beta, beta.id: alpha}

        def one_round(step: tuple[int, Tenant]) -> None:
            n, tenant = step
            mine = headers[tenant.id]
            created = http.post(
                ROLES,
                json={"name": f"{prefix[tenant.id]}{n}", "permissions": ["catalog.read"]},
                headers=mine,
            )
            assert created.status_code == 201, created.text
            listed = http.get(ROLES, params={"page_size": 100}, headers=mine)
            assert listed.status_code == 200, listed.text
            for role in listed.json()["results"]:
                assert role["id"] in builtin[tenant.id] or role["name"].startswith(
                    prefix[tenant.id]
                ), (tenant.name, role)
            theirs = next(iter(builtin[other[tenant.id].id]))
            peeked = http.get(f"{ROLES}{theirs}/", headers=mine)
            assert peeked.status_code == 404, peeked.text

        # Alpha and Beta interleaved, eight requests in flight at a time
        steps = list(zip(itertools.count(), itertools.chain(*[(alpha, beta)] * ROUNDS)))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one_round, steps))
        connected = app_clients(pgbouncer)
        assert_no_pooling_errors(server)

    # More Django connections than server connections: they took turns on them
    assert len(connected) == workers > pgbouncer.pool_size
    rows = recorded()
    assert len(rows) == 2 * ROUNDS
    assert {row.backend for row in rows} == set(backends)
    for row in rows:
        assert row.who == APP_ROLE, row
        assert row.tenant_setting == row.row_tenant, row
        assert row.operator_setting == "", row
        expected = prefix[alpha.id] if row.row_tenant == str(alpha.id) else prefix[beta.id]
        assert row.role_name.startswith(expected), row


def test_the_csv_export_reads_its_server_side_cursor_inside_one_transaction_behind_the_pooler(
    pgbouncer, alpha, beta, tmp_path
):
    count = 300
    for tenant, name in ((alpha, "Alpha"), (beta, "Beta")):
        with tenant_context(tenant.id):
            Product.objects.bulk_create(
                Product(sku=f"{name}-{n:04d}", name=name, price=Decimal("1.00"), currency="EUR")
                for n in range(count)
            )

    # Chunks of ten rows: thirty FETCHes from one cursor while Beta's requests take turns on the
    # pool's server connections
    with (
        api_behind(pgbouncer, tmp_path, workers=3, CATALOG_EXPORT_CHUNK_SIZE="10") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        alpha_headers, beta_headers = signed_in(http, alpha), signed_in(http, beta)
        done = threading.Event()

        def busy_beta() -> int:
            served = 0
            while not done.is_set():
                response = http.get(f"{API}/products/", headers=beta_headers)
                assert response.status_code == 200, response.text
                served += 1
            return served

        with ThreadPoolExecutor(2) as pool:
            others = [pool.submit(busy_beta) for _ in range(2)]
            try:
                exported = [
                    http.get(EXPORT, headers={**alpha_headers, "Accept": "text/csv"})
                    for _ in range(3)
                ]
            finally:
                done.set()
            assert all(other.result() > 0 for other in others)
        assert_no_pooling_errors(server)

    for response in exported:
        assert response.status_code == 200, response.text
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert len(rows) == count
        assert {row["name"] for row in rows} == {"Alpha"}
