"""10 tenants against 10,000, with 1,000,000 products in all: one tenant's requests cost the same.

    .venv/bin/python scripts/bench_tenants.py [--rounds 3] [--duration 10] [--replica]

Needs PostgreSQL and Redis on localhost and wrk (docs/benchmarks.md). The script

1. drops and creates the database `bench_tenants`, migrates it, and seeds the measured tenant
   (on a `bench` plan whose rate limits are far above what the run sends: limits stay on), its
   owner, 40 categories and 40,000 products; then copies that database twice (`CREATE DATABASE
   … TEMPLATE`), so that the measured tenant is the same in both, row for row, id for id;
2. fills each copy with the other tenants, made as the application makes them (`tenant_create`:
   roles, membership, audit chain), each with 40 categories, and their share of the products, so
   that both databases hold 1,000,000 products: one with 10 tenants (9 of about 107,000 products
   each, next to the measured one), one with 10,000 (9,999 of about 96). Categories and products
   go in with `COPY`; the product-count trigger keeps `catalog_productcount` right (checked
   against a COUNT); then `VACUUM ANALYZE`. Each database is seeded in a process of its own;
3. serves each database with gunicorn as bench_catalog.py does (production settings, 4 workers)
   and drives, round after round, the same three scenarios for the measured tenant through each:
   the cached list, the cold list (a new `price_min` each request) and a PATCH with If-Match;
   each round PATCHes products of its own (a product's version moves with each write);
4. prints, per scenario and tenant count, requests/s, p50 and p99 (the rounds' medians), the ratio
   of the 10,000-tenant figures to the 10-tenant ones, and the target (within 10 %);
5. with `--replica`: takes a streaming replica of the cluster (`pg_basebackup -R`, as the
   read-replica tests do) and serves the 10,000-tenant database three ways: the primary alone,
   reads on the replica (`DATABASE_REPLICA_URLS`), and reads spread over primary and replica
   (both listed: a URL that is not in recovery counts as a replica without lag): the cold list's
   requests/s and CPU per request by process, replica's backends included;
6. stops everything, drops the databases and deletes its Redis keys (its own prefix only).
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from bench_catalog import LIST_PATH, Fixture, Measured, Processes, measure, scenarios
from benchlib import (
    HOST,
    add_service_arguments,
    app_environment,
    cpu_seconds,
    delete_redis_keys,
    drop_database,
    free_port,
    hold_run_lock,
    load_average,
    machine,
    postgres_version,
    recreate_database,
    redis_version,
    server_url,
    stop,
    wait_until_serving,
    wrk_version,
)
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
KEY_PREFIX = "bench-tenants"  # every Redis key of the run starts with it
BASE = "bench_tenants"
MEASURED_PRODUCTS = 40_000  # enough for three rounds of PATCHes, each on products of its own
PATCHED_PER_ROUND = 10_000  # what bench_catalog's PATCH scenario uses: 2,000 warm-up, 8,000 run
SCENARIOS = ("list", "cold", "patch")
TARGET = 0.10  # the 10,000-tenant figures within 10 % of the 10-tenant ones
SEED_TIMEOUT = 3600

ADJECTIVES = ["red", "blue", "green", "black", "white", "steel", "oak", "linen", "compact"]
NOUNS = ["chair", "table", "lamp", "kettle", "mug", "backpack", "jacket", "shelf", "clock"]
COLORS = ["red", "blue", "green", "black", "white", "grey"]
SIZES = ["XS", "S", "M", "L", "XL"]
TAGS = ["new", "sale", "eco", "bestseller", "limited", "gift", "outdoor", "kitchen", "office"]

CATEGORY_COLUMNS = "id, tenant_id, parent_id, name, slug, version, created_at, updated_at"
PRODUCT_COLUMNS = (
    "id, tenant_id, sku, name, description, price, currency, stock, is_active, category_id, "
    "attributes, tags, created_at, updated_at, version"
)


# --- seeding (in the child processes, Django set up on one database) ---------------------------


def copy_catalog(cursor, tenant_products: list[tuple[str, int]], rng: random.Random) -> None:
    """40 categories for each tenant of `tenant_products`, and its number of products, with COPY.

    The connection is the superuser's (a seeding script's, not the application's), so row-level
    security does not filter it; the statement triggers run as for any INSERT."""
    now = time.time()
    categories: dict[str, list[str]] = {}
    with cursor.copy(f"COPY catalog_category ({CATEGORY_COLUMNS}) FROM STDIN") as copy:
        stamp = _timestamp(now)
        for tenant_id, _ in tenant_products:
            leaves = categories[tenant_id] = []
            for i in range(8):
                root = str(uuid.uuid4())
                name = f"Department {i}"
                copy.write_row((root, tenant_id, None, name, f"department-{i}", 1, stamp, stamp))
                for j in range(4):
                    leaf = str(uuid.uuid4())
                    leaves.append(leaf)
                    copy.write_row(
                        (
                            leaf,
                            tenant_id,
                            root,
                            f"{name} / {j}",
                            f"department-{i}-{j}",
                            1,
                            stamp,
                            stamp,
                        )
                    )
    with cursor.copy(f"COPY catalog_product ({PRODUCT_COLUMNS}) FROM STDIN") as copy:
        for tenant_id, count in tenant_products:
            leaves = categories[tenant_id]
            for i in range(count):
                adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
                stamp = _timestamp(now - count + i)
                copy.write_row(
                    (
                        str(uuid.uuid4()),
                        tenant_id,
                        f"SKU-{i:07d}",
                        f"{adjective.title()} {noun} {i}",
                        f"A {adjective} {noun} for everyday use. Model {i}, made to last, easy "
                        "to clean, and shipped in recycled packaging.",
                        f"{rng.randint(100, 99_999) / 100:.2f}",
                        "EUR",
                        rng.randint(0, 500),
                        rng.random() > 0.05,
                        rng.choice(leaves),
                        json.dumps({"color": rng.choice(COLORS), "size": rng.choice(SIZES)}),
                        json.dumps(rng.sample(TAGS, k=rng.randint(0, 3))),
                        stamp,
                        stamp,
                        1,
                    )
                )


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(seconds))


def child_seed_measured(database_url: str) -> dict:
    """Migrate, then the measured tenant, its owner and its catalog: what both copies share."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.sessions import issue_tokens
    from kernel.tenancy.models import Plan
    from kernel.tenants import tenant_create

    call_command("migrate", interactive=False, verbosity=0)
    huge = 1_000_000_000
    Plan.objects.update_or_create(
        code="bench",
        defaults={
            "name": "Benchmark",
            "requests_per_minute": huge,
            "burst": huge,
            "max_members": 10,
            "max_api_keys": 10,
            "max_products": huge,
        },
    )
    owner = get_user_model().objects.create_user("bench@example.com", None, name="Bench")
    tenant = tenant_create(name="Bench", slug="bench", owner=owner, plan_code="bench")
    with psycopg.connect(database_url, autocommit=False) as connection:
        with connection.cursor() as cursor:
            copy_catalog(cursor, [(str(tenant.id), MEASURED_PRODUCTS)], random.Random(42))  # noqa: S311
        ids = connection.execute(
            "SELECT id FROM catalog_product WHERE tenant_id = %s ORDER BY sku", [tenant.id]
        ).fetchall()
    token = issue_tokens(user=owner, tenant=tenant)["access"]
    product_ids = [str(pk) for (pk,) in ids]
    return {"tenant_id": str(tenant.id), "token": token, "product_ids": product_ids}


def child_seed_others(database_url: str, tenants: int, products: int) -> dict:
    """`tenants - 1` more tenants, made as the application makes them, and their products: the
    database then holds `products` in all."""
    from django.contrib.auth import get_user_model

    from kernel.tenants import tenant_create

    began = time.monotonic()
    others = tenants - 1
    users = get_user_model().objects
    made = []
    for n in range(others):
        owner = users.create_user(f"owner-{n}@example.com", None, name=f"Owner {n}")
        tenant = tenant_create(name=f"Tenant {n}", slug=f"tenant-{n}", owner=owner, plan_code="pro")
        made.append(str(tenant.id))
        if (n + 1) % 1_000 == 0:
            print(f"  {n + 1:,} of {others:,} tenants", file=sys.stderr, flush=True)
    share, extra = divmod(products - MEASURED_PRODUCTS, others)
    shares = [(tenant_id, share + (n < extra)) for n, tenant_id in enumerate(made)]
    with psycopg.connect(database_url, autocommit=False) as connection:
        with connection.cursor() as cursor:
            copy_catalog(cursor, shares, random.Random(tenants))  # noqa: S311
        (counted,) = connection.execute("SELECT count(*) FROM catalog_product").fetchone()
        (kept,) = connection.execute(
            "SELECT COALESCE(sum(products), 0) FROM catalog_productcount"
        ).fetchone()
        (tenant_rows,) = connection.execute("SELECT count(*) FROM tenants_tenant").fetchone()
    if counted != products or kept != products or tenant_rows != tenants:
        raise RuntimeError(
            f"{products:,} products in {tenants:,} tenants wanted; {counted:,} counted, "
            f"{kept:,} kept, {tenant_rows:,} tenants"
        )
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return {"seconds": time.monotonic() - began}


def run_child(arguments: list[str], environment: dict[str, str]) -> dict:
    output = subprocess.run(  # noqa: S603  (this script, with fixed arguments)
        [sys.executable, __file__, "--child", *arguments],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        timeout=SEED_TIMEOUT,
        check=True,
    )
    return json.loads(output.stdout.decode().strip().splitlines()[-1])


def child_main(arguments: list[str]) -> int:
    import django

    sys.path[:0] = [str(REPO)]
    django.setup()
    database_url = os.environ["DATABASE_URL"]
    if arguments[0] == "measured":
        result = child_seed_measured(database_url)
    else:
        result = child_seed_others(database_url, int(arguments[1]), int(arguments[2]))
    print(json.dumps(result), flush=True)
    return 0


# --- serving and measuring ----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    processes: Processes


def start_server(
    name: str, environment: dict[str, str], directory: Path, options: argparse.Namespace
) -> Server:
    """gunicorn as bench_catalog.py starts it. Each server keeps its Redis keys under a prefix
    of its own: the measured tenant is the same in every database, and a server must not find
    the pages another one cached (nor its rate-limit counters, nor its read-your-writes marks)."""
    port = free_port()
    metrics = directory / f"prometheus-{name}"
    metrics.mkdir()
    log_path = directory / f"server-{name}.log"
    prefix = f"{KEY_PREFIX}:{name}"
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--config", "config/gunicorn.conf.py",
        "--bind", f"{HOST}:{port}", "--workers", str(options.workers),
    ]  # fmt: skip
    process = subprocess.Popen(  # noqa: S603  (a fixed command line)
        command,
        cwd=REPO,
        env={
            **environment,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "CACHE_KEY_PREFIX": prefix,
            "RATELIMIT_KEY_PREFIX": f"{prefix}:rl",
        },
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://{HOST}:{port}"
    wait_until_serving(url, process, log_path)
    database_url = environment["DATABASE_URL"]
    database = database_url.rsplit("/", 1)[1]
    processes = Processes(process.pid, server_url(database_url), database, options.redis_url)
    return Server(name, process, url, processes)


@dataclass
class ReplicaProcesses(Processes):
    """The CPU accounting of bench_catalog.py, plus the replica's backends."""

    replica_url: str = ""  # the replica's maintenance database

    def snapshot(self) -> dict[str, dict[int, float]]:
        taken = super().snapshot()
        with psycopg.connect(self.replica_url, connect_timeout=5) as replica:
            backends = replica.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database]
            ).fetchall()
        taken["replica"] = {pid: cpu_seconds(pid) for (pid,) in backends}
        return taken


def warm(server: Server, token: str) -> None:
    import httpx

    for _ in range(8):  # each worker's first request, and the cache
        response = httpx.get(
            server.url + LIST_PATH, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        response.raise_for_status()


def median_row(rows: list[Measured]) -> dict[str, float]:
    return {
        "rps": statistics.median(m.result.requests_per_second for m in rows),
        "p50": statistics.median(m.result.p50_ms for m in rows),
        "p99": statistics.median(m.result.p99_ms for m in rows),
        "errors": sum(m.result.errors for m in rows),
    }


def report_tenants(
    results: dict[int, list[Measured]], counts: list[int], context: dict[str, str]
) -> None:
    small, large = counts[0], counts[-1]
    print()
    print(f"Run {context['started']} on {context['machine']}")
    print(f"Load average (1, 5, 15 min) at start: {context['load_start']}, at the end: "
          f"{load_average()}")  # fmt: skip
    print(context["setup"])
    print()
    print("| scenario | tenants | requests/s | p50 ms | p99 ms | errors | rounds (requests/s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for key in SCENARIOS:
        for count in counts:
            rows = [m for m in results[count] if m.scenario.key == key]
            row = medians[key, count] = median_row(rows)
            each = ", ".join(f"{m.result.requests_per_second:,.0f}" for m in rows)
            print(
                f"| {rows[0].scenario.label} | {count:,} | {row['rps']:,.0f} | {row['p50']:.1f} "
                f"| {row['p99']:.1f} | {row['errors']} | {each} |"
            )
    print()
    print(f"{large:,} tenants against {small:,} (target: within {TARGET:.0%}):")
    print()
    print("| scenario | requests/s | p50 | p99 | verdict |")
    print("|---|---:|---:|---:|---|")
    for key in SCENARIOS:
        a, b = medians[key, small], medians[key, large]
        rps, p50, p99 = b["rps"] / a["rps"], b["p50"] / a["p50"], b["p99"] / a["p99"]
        held = rps >= 1 - TARGET and p50 <= 1 + TARGET and p99 <= 1 + TARGET
        label = next(m.scenario.label for m in results[small] if m.scenario.key == key)
        print(f"| {label} | {rps:.2f} | {p50:.2f} | {p99:.2f} | {'held' if held else 'missed'} |")


def report_replicas(results: dict[str, list[Measured]], tenants: int) -> None:
    print()
    print(f"The cold list on the {tenants:,}-tenant database, reads routed three ways (medians):")
    print()
    print(
        "| reads on | requests/s | p50 ms | p99 ms | errors | CPU ms/request: gunicorn "
        "| primary | replica | Redis | wrk |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        row = median_row(rows)
        cpu = {
            group: statistics.median(m.cpu_ms.get(group, 0.0) for m in rows)
            for group in ("gunicorn", "postgres", "replica", "redis", "wrk")
        }
        print(
            f"| {name} | {row['rps']:,.0f} | {row['p50']:.1f} | {row['p99']:.1f} "
            f"| {row['errors']} | {cpu['gunicorn']:.2f} | {cpu['postgres']:.2f} "
            f"| {cpu['replica']:.2f} | {cpu['redis']:.2f} | {cpu['wrk']:.2f} |"
        )


def round_fixture(seeded: dict, round_number: int) -> Fixture:
    """The measured tenant as bench_catalog's scenarios take it, with the products this round
    PATCHes first (bench_catalog's PATCH takes them from the fourth on)."""
    ids = seeded["product_ids"]
    start = (round_number - 1) * PATCHED_PER_ROUND
    return Fixture(seeded["tenant_id"], seeded["token"], ids[start:], ids[len(ids) // 2])


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the scenarios")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (as deployed)")
    parser.add_argument("--products", type=int, default=1_000_000, help="in each database")
    parser.add_argument("--tenants", default="10,10000", help="tenant counts, comma-separated")
    parser.add_argument("--replica", action="store_true", help="also measure a read replica")
    add_service_arguments(parser, database=BASE, key_prefix=KEY_PREFIX)
    options = parser.parse_args()
    counts = sorted(int(n) for n in options.tenants.split(","))
    if wrk_version() == "absent":
        print("error: wrk is needed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if options.rounds * PATCHED_PER_ROUND > MEASURED_PRODUCTS:
        print(f"error: at most {MEASURED_PRODUCTS // PATCHED_PER_ROUND} rounds", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    postgres = options.postgres.rstrip("/")
    base_url = f"{postgres}/{options.database}"
    database_urls = {count: f"{base_url}_{count}" for count in counts}
    run_lock = hold_run_lock(base_url, "bench_tenants")  # noqa: F841  (held until the end)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_start = load_average()
    servers: list[Server] = []
    replica = None
    with tempfile.TemporaryDirectory(prefix="bench-tenants-") as workdir:
        directory = Path(workdir)
        # One environment for every process of the run: the token the seeding issues must be
        # valid on every server.
        environment = {
            **app_environment(
                database_url=base_url,
                redis_url=options.redis_url,
                key_prefix=KEY_PREFIX,
                settings_module="config.settings.production",
                pythonpath=str(REPO),
            ),
            "RATELIMIT_ENABLED": "true",
        }
        delete_redis_keys(options.redis_url, KEY_PREFIX)
        try:
            recreate_database(base_url)
            print(f"seeding the measured tenant ({MEASURED_PRODUCTS:,} products) ...", flush=True)
            seeded = run_child(["measured"], environment)
            for count, url in database_urls.items():
                drop_database(url)
                with psycopg.connect(server_url(url), autocommit=True) as admin:
                    admin.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(url.rsplit("/", 1)[1]),
                            sql.Identifier(options.database),
                        )
                    )
                print(f"seeding {count:,} tenants, {options.products:,} products ...", flush=True)
                done = run_child(
                    ["others", str(count), str(options.products)],
                    {**environment, "DATABASE_URL": url},
                )
                print(f"  seeded in {done['seconds']:.0f} s", flush=True)
            drop_database(base_url)

            by_count = {
                count: start_server(
                    f"t{count}", {**environment, "DATABASE_URL": url}, directory, options
                )
                for count, url in database_urls.items()
            }
            servers.extend(by_count.values())
            for server in servers:
                warm(server, seeded["token"])
            results: dict[int, list[Measured]] = {count: [] for count in counts}
            for round_number in range(1, options.rounds + 1):
                fixture = round_fixture(seeded, round_number)
                for count, server in by_count.items():
                    selected = [
                        s
                        for s in scenarios(fixture, directory, options.threads, "", round_number)
                        if s.key in SCENARIOS
                    ]
                    for scenario in selected:
                        print(
                            f"running: {scenario.label}, {count:,} tenants "
                            f"(round {round_number}) ...",
                            flush=True,
                        )
                        measured = measure(scenario, server.url, options, server.processes)
                        measured.round = round_number
                        results[count].append(measured)
            setup = (
                f"Server: gunicorn, {options.workers} sync workers, config/gunicorn.conf.py, "
                f"production settings. Load: wrk {wrk_version()}, {options.threads} threads, "
                f"{options.connections} connections, {options.warmup:g} s warm-up then "
                f"{options.duration:g} s per scenario, {options.rounds} rounds. "
                f"{options.products:,} products in each database, {MEASURED_PRODUCTS:,} of them "
                f"the measured tenant's. PostgreSQL {postgres_version(base_url)}, "
                f"Redis {redis_version(options.redis_url)}."
            )
            context = {
                "started": started,
                "machine": machine(),
                "load_start": load_start,
                "setup": setup,
            }
            report_tenants(results, counts, context)

            if options.replica:
                replica = measure_replicas(
                    options,
                    environment,
                    database_urls[counts[-1]],
                    seeded,
                    directory,
                    servers,
                    counts[-1],
                )
        finally:
            for server in servers:
                stop(server.process)
            if replica is not None:
                replica.stop()
                shutil.rmtree(replica.data, ignore_errors=True)
            for url in [base_url, *database_urls.values()]:
                with contextlib.suppress(psycopg.Error):
                    drop_database(url)
            delete_redis_keys(options.redis_url, KEY_PREFIX)
    return 0


def measure_replicas(
    options: argparse.Namespace,
    environment: dict[str, str],
    database_url: str,
    seeded: dict,
    directory: Path,
    servers: list[Server],
    tenants: int,
):
    """The cold list, reads on the primary alone, on a replica, and on both."""
    sys.path[:0] = [str(REPO)]
    from tests.fixtures.pg_replica import start_replica

    primary_port = int(database_url.rsplit(":", 1)[1].split("/", 1)[0])
    print("taking a streaming replica of the cluster ...", flush=True)
    replica = start_replica(primary_port, shared_buffers="128MB")
    replica.caught_up(timeout=600)
    database = database_url.rsplit("/", 1)[1]
    replica_url = replica.url(database)
    ways = {
        "the primary alone": "",
        "the replica": replica_url,
        "primary and replica": f"{database_url},{replica_url}",
    }
    results: dict[str, list[Measured]] = {name: [] for name in ways}
    routed = {}
    for name, replicas in ways.items():
        server = start_server(
            f"replica-{len(routed)}",
            {**environment, "DATABASE_URL": database_url, "DATABASE_REPLICA_URLS": replicas},
            directory,
            options,
        )
        servers.append(server)
        server.processes = ReplicaProcesses(
            **vars(server.processes), replica_url=replica.url("postgres")
        )
        warm(server, seeded["token"])
        routed[name] = server
    for round_number in range(1, options.rounds + 1):
        fixture = round_fixture(seeded, round_number)
        cold = next(
            s
            for s in scenarios(fixture, directory, options.threads, "", round_number)
            if s.key == "cold"
        )
        for name, server in routed.items():
            print(f"running: cold list, reads on {name} (round {round_number}) ...", flush=True)
            measured = measure(cold, server.url, options, server.processes)
            measured.round = round_number
            results[name].append(measured)
    report_replicas(results, tenants)
    return replica


if __name__ == "__main__":
    sys.exit(main())
