"""Where a request's CPU goes, per scenario: cProfile's top lines and CPU ms per request.

    .venv/bin/python scripts/profile_requests.py [--requests 500] [--top 25] [--only list,patch]

Needs PostgreSQL and Redis on localhost. The script drops and creates the database
`profile_requests`, migrates it, seeds one tenant with 20,000 products (bench_catalog.py's
seeding), and then, in this one process, with the production settings, sends each scenario's
requests through `config.wsgi.application` as gunicorn calls it (bench_catalog.wsgi_call): the
cached list and detail, the 304 revalidation, the cold list (a new `price_min` each request), a
PATCH with If-Match (each request its own product) and a POST (each its own SKU). For each it
prints the CPU milliseconds per request of this process (`time.process_time`: Python, and the
client side of PostgreSQL and Redis; the servers' own CPU is bench_catalog.py's to measure) and
the profile's top lines by own time and by cumulative time, then drops the database and its
Redis keys.

`--explain` then sends one PATCH and one POST with PostgreSQL's auto_explain loaded in the
application's own connection (its plans sent back to the client as notices): every statement the
write sends and the statements that triggers, functions and the deferred foreign-key checks run
inside it or at COMMIT (nested), each with its time, buffers and trigger times.

The profile is cProfile's, timed in CPU seconds (waiting on PostgreSQL or Redis counts for nothing):
deterministic, so it inflates the cost of many small calls; the CPU
figure is measured in a second pass without the profiler.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import sys
import time
from pathlib import Path

from bench_catalog import LIST_PATH, seed, wsgi_call
from benchlib import (
    HOST,
    add_service_arguments,
    app_environment,
    clean_up,
    delete_redis_keys,
    hold_run_lock,
    load_average,
    machine,
    recreate_database,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
KEY_PREFIX = "profile-requests"
PRODUCTS = 20_000
SERVER = f"{HOST}:8000"


class Scenario:
    """`requests(n)` gives n (method, path, headers, body) to send; `prepare()` runs before."""

    def __init__(self, key: str, label: str, make) -> None:
        self.key, self.label, self.make = key, label, make


def scenarios(fixture, list_etag: str) -> list[Scenario]:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {fixture.token}"}
    detail = f"/api/v1/products/{fixture.detail_id}/"
    # Each pass (the profiled one, the timed one) takes products and prices of its own.
    spare = iter(fixture.product_ids[3:])
    cents = iter(range(101, 10_000_000))
    skus = iter(range(10_000_000))

    def cold(n):
        for _ in range(n):
            c = next(cents)
            yield "GET", f"{LIST_PATH}&price_min={c // 100}.{c % 100:02d}", auth, b""

    def patch(n):
        for _ in range(n):
            path = f"/api/v1/products/{next(spare)}/"
            headers = {**auth, "HTTP_IF_MATCH": '"1-0"'}
            yield "PATCH", path, headers, b'{"stock": 321}'

    def create(n):
        for _ in range(n):
            body = {"sku": f"PROFILE-{next(skus)}", "name": "Profiled", "price": "9.99"}
            yield "POST", "/api/v1/products/", auth, json.dumps(body).encode()

    def same(method, path, headers):
        return lambda n: ((method, path, headers, b"") for _ in range(n))

    return [
        Scenario("list", "cached list", same("GET", LIST_PATH, auth)),
        Scenario("detail", "cached detail", same("GET", detail, auth)),
        Scenario(
            "304",
            "304 revalidation",
            same("GET", LIST_PATH, {**auth, "HTTP_IF_NONE_MATCH": list_etag}),
        ),
        Scenario("cold", "cold list", cold),
        Scenario("patch", "PATCH with If-Match", patch),
        Scenario("create", "POST a product", create),
        Scenario("bare", "bare view (in the stack)", same("GET", "/bench/bare/", {})),
    ]


def send(application, requests) -> list[int]:
    return [
        wsgi_call(application, SERVER, method, path, headers, body)
        for method, path, headers, body in requests
    ]


def top_lines(profile: cProfile.Profile, sort: str, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    text = out.getvalue()
    return text[text.index("ncalls") :].rstrip()


def explain_writes(application, fixture) -> None:
    """One PATCH and one POST, with auto_explain's plans of everything they send."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection  # the psycopg connection itself: these are session settings
    plans: list[str] = []
    raw.add_notice_handler(lambda notice: plans.append(notice.message_primary))
    for statement in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_analyze = on",
        "SET auto_explain.log_buffers = on",
        "SET auto_explain.log_triggers = on",
        "SET auto_explain.log_nested_statements = on",
        "SET client_min_messages = log",
    ):
        raw.execute(statement)
    raw.commit()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {fixture.token}"}
    product = fixture.product_ids[-1]
    new_product = b'{"sku": "EXPLAINED-1", "name": "Explained", "price": "9.99"}'
    patch = {**auth, "HTTP_IF_MATCH": '"1-0"'}
    writes = [
        ("PATCH", f"/api/v1/products/{product}/", patch, b'{"stock": 5}'),
        ("POST", "/api/v1/products/", auth, new_product),
    ]  # fmt: skip
    for method, path, headers, body in writes:
        plans.clear()
        status = wsgi_call(application, SERVER, method, path, headers, body)
        print()
        print(f"### {method} {path.split('/')[3]}: {status}, what PostgreSQL ran (auto_explain)")
        print()
        print("```")
        for plan in plans:
            print(plan.strip())
            print()
        print("```")
    raw.execute("SET client_min_messages = notice")
    raw.execute("RESET auto_explain.log_min_duration")
    raw.commit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=500, help="per scenario and pass")
    parser.add_argument("--top", type=int, default=25, help="profile lines per table")
    parser.add_argument("--only", help="comma-separated: list,detail,304,cold,patch,create,bare")
    parser.add_argument("--products", type=int, default=PRODUCTS)
    parser.add_argument(
        "--explain", action="store_true", help="then EXPLAIN ANALYZE what a PATCH and a POST send"
    )
    add_service_arguments(parser, database="profile_requests", key_prefix=KEY_PREFIX)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    database_url = f"{options.postgres.rstrip('/')}/{options.database}"
    run_lock = hold_run_lock(database_url, "profile_requests")  # noqa: F841  (held to the end)
    os.environ.update(
        {
            **app_environment(
                database_url=database_url,
                redis_url=options.redis_url,
                key_prefix=KEY_PREFIX,
                settings_module="bench_settings",
                pythonpath=os.pathsep.join([str(REPO), str(SCRIPTS)]),
            ),
            "RATELIMIT_ENABLED": "true",
        }
    )
    sys.path[:0] = [str(REPO)]
    delete_redis_keys(options.redis_url, KEY_PREFIX)
    recreate_database(database_url)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        from config.wsgi import application

        call_command("migrate", interactive=False, verbosity=0)
        print(f"seeding {options.products:,} products ...", file=sys.stderr, flush=True)
        fixture = seed(products=options.products)
        auth = {"HTTP_AUTHORIZATION": f"Bearer {fixture.token}"}
        send(application, [("GET", LIST_PATH, auth, b"")] * 3)
        list_etag = Client().get(LIST_PATH, headers={"Host": SERVER}, **auth)["ETag"]
        wanted = set(options.only.split(",")) if options.only else None
        print(f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine()}; load {load_average()}")
        print(
            f"{options.requests} requests per scenario and pass, in one process, production "
            f"settings, {options.products:,} products in one tenant"
        )
        for scenario in scenarios(fixture, list_etag):
            if wanted is not None and scenario.key not in wanted:
                continue
            send(application, scenario.make(20))  # warm: imports, connections, caches
            began = time.process_time()
            statuses = send(application, scenario.make(options.requests))
            cpu_ms = (time.process_time() - began) * 1000 / options.requests
            profile = cProfile.Profile(time.process_time)  # CPU, not waiting on servers
            profile.enable()
            send(application, scenario.make(options.requests))
            profile.disable()
            print()
            print(f"### {scenario.label}: {cpu_ms:.2f} ms of CPU per request (statuses "
                  f"{sorted(set(statuses))})")  # fmt: skip
            print()
            print("By own time:")
            print("```")
            print(top_lines(profile, "tottime", options.top))
            print("```")
            print("By cumulative time:")
            print("```")
            print(top_lines(profile, "cumulative", options.top))
            print("```")
        if options.explain:
            explain_writes(application, fixture)
    finally:
        clean_up(database_url=database_url, redis_url=options.redis_url, key_prefix=KEY_PREFIX)
    return 0


if __name__ == "__main__":
    sys.exit(main())
