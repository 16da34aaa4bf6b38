"""The catalog API under load, served as in production, against Django's ceiling and the
typical Django project a user would write instead.

    .venv/bin/python scripts/bench_catalog.py [--duration 10] [--connections 16] [--workers 4]

Needs PostgreSQL and Redis on localhost and wrk (docs/benchmarks.md). The script

1. drops and creates the database `bench_catalog`, migrates it, and seeds one tenant (on a
   `bench` plan whose rate limits are far above what the run can send: limits stay on) with
   100,000 products in 40 categories;
2. starts gunicorn with config/gunicorn.conf.py and the production settings (plus a bare JSON
   view at /bench/bare/, and the same view after one Redis round trip at /bench/round-trip/,
   scripts/bench_urls.py), metrics in multiprocess mode, on a free 127.0.0.1 port;
3. counts, once and in process (through config.wsgi.application, as gunicorn calls it), what
   a cached-list hit sends to PostgreSQL (libpq's protocol trace, next to what Django logs) and
   to Redis (client-side round trips, and MONITOR), and the same for the other requests;
4. drives each scenario with wrk (a warm-up, then a fixed number of connections for a fixed
   time) with a valid Bearer token; reads the cache hit/miss counters from /metrics around each
   run, to show that a "cached" run hit and a "cold" run missed, and the CPU time the workers,
   PostgreSQL's backends, Redis and wrk used, per request;
5. prints the results as Markdown, then stops the server, drops the database and deletes its
   Redis keys (only those under its own prefix: the Redis server is shared).

Tracing's cost: the scenario `list-traced` is the cached list again, on a second gunicorn
started the same way but exporting spans (kernel/telemetry.py: OTLP over HTTP, parent-based
sampling at 10 %) to a sink in this script that answers every export with a 200, so that one run
gives the cached list with tracing off (`list`, no endpoint set) and on, and their ratio.

Two references, each its own gunicorn (the same config/gunicorn.conf.py and worker count),
started the same way in the same run:

- the ceiling (`ceiling`): scripts/bench_ceiling.py, a Django view with no middleware, no app
  and no database answering at the list's path with exactly the bytes (and content type) of
  the cached list's body, fetched from our server once the writes of step 3 are done: what
  Django itself can do here;
- the typical project (`typical-list`, `typical-detail`, `typical-304`, `typical-cold`,
  `typical-patch`, `typical-create`): scripts/bench_typical/, the same five endpoints on the
  same tables, at the same paths, as a typical project writes them: a DRF ModelViewSet over
  unmanaged models, stock simplejwt JWTAuthentication (a user query a request) verifying the
  same token, a django-filter FilterSet (`price_min`), DRF's CursorPagination, `cache_page`
  through django-redis on the list and the detail, startproject's middleware, Django's own
  PostgreSQL backend as the database URL's user (no row-level security). It does less than we
  do: no tenant scoping, audit, events, rate limits, conditional requests or metrics. Where it
  cannot honour a request the way ours does, it answers as a typical project would: If-None-Match
  gets a 200 from cache_page (no ETag, so no 304), If-Match is ignored. Its CursorPagination
  orders by `created_at`, which the index its model declares serves: created on the shared
  table before each `typical-*` scenario and dropped before each of ours, which it would
  otherwise serve too. Each reference's scenario runs right after ours it is compared with.

The report gives, per scenario (cached list, cached detail, 304, cold list, PATCH, POST), our
requests/s over the typical project's (target: at least 1x, 2x for the cached ones), over the
ceiling's (target for the cached list: at least 50 %), and over the in-stack bare view's, as
the earlier runs did.

`--profile FILE` records the workers with py-spy during the cached-list run (py-spy is not a
dependency: install it for the run only) and prints where the requests spent their time.
"""

import argparse
import collections
import contextlib
import functools
import http.server
import io
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import httpx
from benchlib import (
    HOST,
    Result,
    add_service_arguments,
    app_environment,
    child_pids,
    clean_up,
    cpu_seconds,
    delete_redis_keys,
    free_port,
    hold_run_lock,
    load_average,
    machine,
    postgres_version,
    recreate_database,
    redis_version,
    run_wrk,
    server_url,
    stop,
    wait_until_serving,
    wrk_version,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
KEY_PREFIX = "bench-catalog"  # every Redis key of the run starts with it
BATCH = 5_000
LIST_PATH = "/api/v1/products/?page_size=25"
TARGET_RATIO = 0.70
# The sampling ratio of the traced server (OTEL_TRACES_SAMPLER_ARG).
TRACING_RATIO = "0.1"
# GraphQL should cost at most this many times what REST costs for the same page.
GRAPHQL_TARGET = 1.5
# Ours against the references: the cached list's requests/s at least this share of the
# no-middleware ceiling's; every scenario at least as fast as the typical project's, and the
# cached ones (answered from a cache by both) at least twice as fast.
CEILING_TARGET = 0.5
TYPICAL_TARGET = 1.0
TYPICAL_CACHED_TARGET = 2.0
# Our scenario, the typical project's counterpart, and what that counterpart does differently.
COMPARED = [
    ("list", "typical-list", "cache_page hit"),
    ("detail", "typical-detail", "cache_page hit, no related products"),
    ("304", "typical-304", "no ETag: a 200 from cache_page"),
    ("cold", "typical-cold", "a cache_page miss"),
    ("patch", "typical-patch", "If-Match ignored"),
    ("create", "typical-create", "no quota, audit or event"),
]
CACHED = {"list", "detail", "304"}
# The typical project's cache keys, under the run's prefix (so that clean-up deletes them).
TYPICAL_CACHE_PREFIX = f"{KEY_PREFIX}-typical"
TYPICAL_INDEX = "bench_typical_product_created_at"
HITS_IN_A_ROW = 200


# --- seeding ------------------------------------------------------------------------------------

ADJECTIVES = ["red", "blue", "green", "black", "white", "steel", "oak", "linen", "compact"]
NOUNS = ["chair", "table", "lamp", "kettle", "mug", "backpack", "jacket", "shelf", "clock"]
COLORS = ["red", "blue", "green", "black", "white", "grey"]
SIZES = ["XS", "S", "M", "L", "XL"]
TAGS = ["new", "sale", "eco", "bestseller", "limited", "gift", "outdoor", "kitchen", "office"]


@dataclass
class Fixture:
    tenant_id: str
    token: str
    product_ids: list[str]
    detail_id: str


def seed(*, products: int) -> Fixture:
    """One tenant on the `bench` plan, its owner, 40 categories and `products` products."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from accounts.sessions import issue_tokens
    from catalog.models import Category, Product
    from kernel.context import tenant_context
    from kernel.tenancy.models import Plan
    from kernel.tenants import tenant_create

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
    user = get_user_model().objects.create_user(
        "bench@example.com", secrets.token_urlsafe(16), name="Bench"
    )
    tenant = tenant_create(name="Bench", slug="bench", owner=user, plan_code="bench")
    rng = random.Random(42)  # noqa: S311  (repeatable data, not secrets)
    with tenant_context(tenant.id):
        roots = Category.objects.bulk_create(
            Category(name=f"Department {i}", slug=f"department-{i}") for i in range(8)
        )
        leaves = Category.objects.bulk_create(
            Category(name=f"{root.name} / {j}", slug=f"{root.slug}-{j}", parent=root)
            for root in roots
            for j in range(4)
        )
        for start in range(0, products, BATCH):
            with transaction.atomic():
                Product.objects.bulk_create(
                    _product(rng, i, leaves) for i in range(start, min(start + BATCH, products))
                )
        ids = Product.objects.order_by("sku").values_list("id", flat=True)
        product_ids = [str(pk) for pk in ids]
        detail_id = product_ids[len(product_ids) // 2]
    token = issue_tokens(user=user, tenant=tenant)["access"]
    return Fixture(str(tenant.id), token, product_ids, detail_id)


def _product(rng: random.Random, i: int, categories: list):
    from catalog.models import Product

    adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    return Product(
        sku=f"SKU-{i:06d}",
        name=f"{adjective.title()} {noun} {i}",
        description=(
            f"A {adjective} {noun} for everyday use. Model {i}, made to last, easy to clean, "
            f"and shipped in recycled packaging."
        ),
        price=Decimal(rng.randint(100, 99_999)) / 100,
        currency="EUR",
        stock=rng.randint(0, 500),
        is_active=rng.random() > 0.05,
        category=rng.choice(categories),
        attributes={"color": rng.choice(COLORS), "size": rng.choice(SIZES)},
        tags=rng.sample(TAGS, k=rng.randint(0, 3)),
    )


def analyze(database_url: str) -> None:
    """What autovacuum would do soon after a bulk load: statistics for the planner."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# --- wrk scripts ---------------------------------------------------------------------------------

# wrk runs `setup` once per thread in its main Lua state: number the threads, so that each can
# take its own share of the work.
LUA_THREAD_INDEX = """
local created = 0
function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
end
"""

# A price_min that no request of the run asked before: every request misses the cache and
# computes its page (one SQL query). Prices are 1.00 to 999.99, so most rows qualify and each
# page is found within the first few dozen rows of the ordering index: a cheap, typical miss.
LUA_COLD_LIST = (
    LUA_THREAD_INDEX
    + """
local counter = 0
function request()
  counter = counter + 1
  local cents = {offset} + counter * {threads} + (thread_index or 0)
  local path = string.format("/api/v1/products/?page_size=25&price_min=%d.%02d",
                             math.floor(cents / 100), cents % 100)
  return wrk.format(nil, path)
end
"""
)

# PATCH the stock of products of this run's own slice, each thread its own products, with
# If-Match holding the version the previous response of that product returned (products start
# at the version they had when the round began: `known`, where not 1). A slice is far longer than
# the requests in flight, so the version is current.
LUA_PATCH = (
    LUA_THREAD_INDEX
    + """
local ids = {{{ids}}}
local known = {{{known}}}
local mine, versions, position = {{}}, {{}}, 0
function init(args)
  for i = (thread_index or 0) + 1, #ids, {threads} do mine[#mine + 1] = ids[i] end
  for _, id in ipairs(mine) do versions[id] = known[id] or 1 end
end
function request()
  position = position % #mine + 1
  local id = mine[position]
  local headers = {{}}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Content-Type"] = "application/json"
  headers["If-Match"] = string.format('"%d-0"', versions[id])
  local body = string.format('{{"stock": %d}}', math.random(10, 1000))
  return wrk.format("PATCH", "/api/v1/products/" .. id .. "/", headers, body)
end
function response(status, headers, body)
  local etag = headers["ETag"]
  if etag then
    local id = string.match(body, '"id":"([%x%-]+)"')
    local version = string.match(etag, '^"(%d+)%-')
    if id and version then versions[id] = tonumber(version) end
  end
end
"""
)

# POST a new product with a SKU no request used before.
LUA_CREATE = (
    LUA_THREAD_INDEX
    + """
local counter = 0
function request()
  counter = counter + 1
  local headers = {{}}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Content-Type"] = "application/json"
  local body = string.format(
    '{{"sku": "BENCH-{run}-%d-%d", "name": "Bench product", "price": "9.99", "stock": 50}}',
    thread_index or 0, counter)
  return wrk.format("POST", "/api/v1/products/", headers, body)
end
"""
)


# The cached list's page through GraphQL: the same 25 products with the same fields (the category
# as `category { id }`, REST's `category`), in one POST.
GRAPHQL_PAGE_FIELDS = (
    "id sku name description price currency stock isActive category { id } tags attributes "
    "version createdAt updatedAt"
)
GRAPHQL_LIST_QUERY = (
    "query Page($filter: ProductFilter) { products(first: 25, filter: $filter) "
    "{ edges { node { " + GRAPHQL_PAGE_FIELDS + " } } pageInfo { hasNextPage endCursor } } }"
)
LUA_GRAPHQL_LIST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""
# The cold list through GraphQL: a priceMin no request asked before, as LUA_COLD_LIST.
LUA_GRAPHQL_COLD = (
    LUA_THREAD_INDEX
    + """
local counter = 0
function request()
  counter = counter + 1
  local cents = {offset} + counter * {threads} + (thread_index or 0)
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Content-Type"] = "application/json"
  local body = string.format('{prefix}"%d.%02d"{suffix}', math.floor(cents / 100), cents % 100)
  return wrk.format("POST", "/graphql/", headers, body)
end
"""
)


def graphql_body(price_min: str | None = None) -> str:
    variables = {"filter": {"priceMin": price_min}} if price_min is not None else {}
    return json.dumps({"query": GRAPHQL_LIST_QUERY, "variables": variables})


def _graphql_cold_script(offset: int, threads: int) -> str:
    prefix, suffix = graphql_body("PRICE").split('"PRICE"')
    return (
        _fill(LUA_GRAPHQL_COLD, offset=offset, threads=threads)
        .replace("{prefix}", prefix.replace("%", "%%"))
        .replace("{suffix}", suffix.replace("%", "%%"))
    )


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    label: str
    path: str
    headers: list[str] = field(default_factory=list)
    # Lua scripts for the warm-up and the measured run (different, where requests must not
    # repeat across the two).
    warmup_script: Path | None = None
    script: Path | None = None
    cache_kind: str | None = None
    # Which server answers it: ours, the traced one, the ceiling or the typical project.
    server: str = "ours"


@dataclass
class Measured:
    scenario: Scenario
    result: Result
    load_before: str
    load_after: str
    hits: int | None = None
    misses: int | None = None
    # CPU milliseconds per request, by process group: where the two cores went.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # With --rounds: which pass over the scenarios this was.
    round: int = 1

    @property
    def label(self) -> str:
        label = self.scenario.label
        return label if self.round == 1 else f"{label}, round {self.round}"


@dataclass
class Processes:
    """What serves the run, for CPU accounting: gunicorn, PostgreSQL's backends, Redis, wrk."""

    server_pid: int
    postgres_url: str  # the server's maintenance database, to list the backends of ours
    database: str
    redis_url: str

    def snapshot(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far, per process; Redis and wrk as one "process" each (pid 0)."""
        import psycopg
        import redis

        with psycopg.connect(self.postgres_url, connect_timeout=5) as admin:
            backends = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database]
            ).fetchall()
        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        workers = [self.server_pid, *child_pids(self.server_pid)]
        return {
            "gunicorn": {pid: cpu_seconds(pid) for pid in workers},
            "postgres": {pid: cpu_seconds(pid) for (pid,) in backends},
            "redis": {0: info["used_cpu_user"] + info["used_cpu_sys"]},
            "wrk": {0: _children_cpu()},
        }


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two snapshots by the processes alive at the second one (a
    database connection closed meanwhile takes its share with it: an undercount, never less
    than zero)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
    return usage.ru_utime + usage.ru_stime


_CACHE_COUNTER = re.compile(
    r'^tenantapi_catalog_cache_(hits|misses)_total\{kind="(\w+)"\} ([\d.e+]+)$', re.MULTILINE
)


def cache_counters(base_url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return {(kind, what): float(value) for what, kind, value in _CACHE_COUNTER.findall(text)}


def measure(
    scenario: Scenario, base_url: str, options: argparse.Namespace, processes: Processes
) -> Measured:
    common = {"connections": options.connections, "threads": options.threads}
    url = base_url + scenario.path
    run_wrk(
        url,
        duration=options.warmup,
        headers=scenario.headers,
        script=scenario.warmup_script,
        **common,
    )
    before = cache_counters(base_url) if scenario.cache_kind else {}
    cpu_before = processes.snapshot()
    load_before = load_average()
    result = run_wrk(
        url, duration=options.duration, headers=scenario.headers, script=scenario.script, **common
    )
    load_after = load_average()
    cpu_after = processes.snapshot()
    measured = Measured(scenario, result, load_before, load_after)
    if result.requests:
        measured.cpu_ms = {
            name: cpu_used(cpu_before[name], cpu_after[name]) * 1000 / result.requests
            for name in cpu_before
        }
    if scenario.cache_kind:
        after = cache_counters(base_url)
        kind = scenario.cache_kind
        measured.hits = round(after.get((kind, "hits"), 0) - before.get((kind, "hits"), 0))
        measured.misses = round(after.get((kind, "misses"), 0) - before.get((kind, "misses"), 0))
    return measured


# --- counting one cached hit in process ----------------------------------------------------------


@dataclass
class Cost:
    label: str
    status: int
    queries: int
    round_trips: int
    postgres: list[str]  # what the client sent PostgreSQL (libpq's trace of the protocol)
    commands: list[str]
    monitored: list[str]  # what the requests' commands ran, Lua scripts' own calls included
    sql: list[tuple[str, float]]  # statement, milliseconds
    milliseconds: float


class RedisRoundTrips:
    """Counts what redis-py writes to its sockets: one write per command, one per pipeline."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def __enter__(self) -> "RedisRoundTrips":
        from redis.connection import AbstractConnection

        self._original = AbstractConnection.send_packed_command
        original, commands = self._original, self.commands

        def send_packed_command(connection, command, check_health=True):
            chunks = command if isinstance(command, list) else [command]
            data = b"".join(c if isinstance(c, bytes) else bytes(c) for c in chunks)
            names = re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", data)
            commands.append("+".join(name.decode().upper() for name in names) or "?")
            return original(connection, command, check_health)

        AbstractConnection.send_packed_command = send_packed_command
        return self

    def __exit__(self, *exc) -> None:
        from redis.connection import AbstractConnection

        AbstractConnection.send_packed_command = self._original


class PostgresTrace:
    """What the application's database connection actually sends, from libpq's protocol trace.

    Django logs BEGIN and COMMIT when a view enters transaction.atomic(), but psycopg 3 sends
    neither for a transaction in which nothing was executed: the trace tells the difference.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "libpq-trace.txt"
        self.queries: list[str] = []

    def __enter__(self) -> "PostgresTrace":
        from django.db import connection

        connection.ensure_connection()
        self._file = self.path.open("w")
        self._pgconn = connection.connection.pgconn
        self._pgconn.trace(self._file.fileno())
        return self

    def __exit__(self, *exc) -> None:
        self._pgconn.untrace()
        self._file.close()
        for line in self.path.read_text().splitlines():
            # <time> F <length> Query "SELECT 1" (or Parse ..., for the extended protocol)
            parts = line.split("\t")
            if len(parts) > 4 and parts[1] == "F" and parts[3] in ("Query", "Parse"):
                self.queries.append(parts[4].strip().strip('"')[:30])


class RedisMonitor:
    """The commands Redis itself saw on our database number, from MONITOR, between start and
    stop (a cross-check of the client-side count; the server is shared, so filter by db)."""

    END = "bench-catalog-monitor-end"

    def __init__(self, redis_url: str) -> None:
        import redis

        self.redis_url = redis_url
        self.db = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs.get("db", 0)
        self.lines: list[str] = []
        self._ready = threading.Event()
        # Connected (and its database selected) before the request, so that only its ECHO
        # shows up after it.
        self._ender = redis.Redis.from_url(redis_url)
        self._ender.ping()

    def __enter__(self) -> "RedisMonitor":
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def _listen(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        with client.monitor() as monitor:
            self._ready.set()
            for entry in monitor.listen():
                if self.END in entry["command"]:
                    break
                if entry["db"] == self.db:
                    inside = " (in the script)" if entry.get("client_type") == "lua" else ""
                    self.lines.append(entry["command"].split(" ", 1)[0].upper() + inside)
        client.close()

    def __exit__(self, *exc) -> None:
        self._ender.echo(self.END)
        self._ender.close()
        self._thread.join(5)


def wsgi_call(
    application, host: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> int:
    """One request through the WSGI application as gunicorn calls it; returns the status.

    Not Django's test client: it keeps `close_old_connections` off `request_started`, and with
    it the per-request reset of the database connection's health check, which production runs.
    """
    path_info, _, query = path.partition("?")
    server_name, _, server_port = host.partition(":")
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port or "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": HOST,
        "HTTP_HOST": host,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    statuses = []
    response = application(environ, lambda status, _headers, _exc=None: statuses.append(status))
    try:
        b"".join(response)
    finally:
        response.close()
    return int(statuses[0].split()[0])


def count_costs(
    fixture: Fixture, host: str, redis_url: str, list_etag: str, directory: Path
) -> list[Cost]:
    from config.wsgi import application

    # The list's cache key covers scheme, host and path: the same Host as the server's entries.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {fixture.token}"}
    cold = f"{LIST_PATH}&price_min="
    # Products the wrk runs never touch, at version 1.
    spare = [f"/api/v1/products/{pk}/" for pk in fixture.product_ids[:3]]
    patch = {**auth, "HTTP_IF_MATCH": '"1-0"'}
    stock = b'{"stock": 321}'
    new_products = [
        json.dumps({"sku": f"COUNT-{i}", "name": "Counted", "price": "1.00"}).encode()
        for i in range(3)
    ]
    requests = [  # label, method, path, paths of the two requests before it, headers, body
        ("cached list", "GET", LIST_PATH, [LIST_PATH] * 2, auth, b""),
        (
            "304 revalidation",
            "GET",
            LIST_PATH,
            [LIST_PATH] * 2,
            {**auth, "HTTP_IF_NONE_MATCH": list_etag},
            b"",
        ),
        ("cached detail", "GET", f"/api/v1/products/{fixture.detail_id}/", None, auth, b""),
        # For comparison, and to show that the counts see SQL where there is some.
        ("cold list (a miss)", "GET", f"{cold}1.23", [f"{cold}1.21", f"{cold}1.22"], auth, b""),
        ("write: PATCH stock, If-Match", "PATCH", spare[2], spare[:2], patch, stock),
        ("write: POST a product", "POST", "/api/v1/products/", None, auth, new_products),
        ("bare view", "GET", "/bench/bare/", None, {}, b""),
        ("bare view + one Redis round trip", "GET", "/bench/round-trip/", None, {}, b""),
    ]
    costs = []
    for label, method, path, warm_paths, headers, bodies in requests:
        # A body for each of the three calls, where they must differ (new SKUs).
        warm_bodies, body = (
            (bodies[:2], bodies[2]) if isinstance(bodies, list) else ([bodies] * 2, bodies)
        )
        # Two before counting: the process's first request opens its connections (connecting
        # is not a round trip of the request) and imports what it imports once.
        for warm_path, warm_body in zip(warm_paths or [path, path], warm_bodies, strict=True):
            wsgi_call(application, host, method, warm_path, headers, warm_body)
        call = functools.partial(wsgi_call, application, host, method, path, headers, body)
        costs.append(counted(label, redis_url, directory, call))
    costs.append(hits_in_a_row(application, host, redis_url, directory, auth))
    return costs


def hits_in_a_row(
    application: Callable, host: str, redis_url: str, directory: Path, auth: dict[str, str]
) -> Cost:
    """HITS_IN_A_ROW cached-list requests of one person in one process, counted together: what a
    hit costs over time, lease renewals and tracked keys' confirmations included, which one
    request alone shows or not by chance."""
    # The writes measured before changed the catalog: the first request after them is a miss.
    wsgi_call(application, host, "GET", LIST_PATH, auth, b"")
    return counted(
        f"cached list, {HITS_IN_A_ROW} hits in a row (totals; ms: the mean)",
        redis_url,
        directory,
        functools.partial(wsgi_call, application, host, "GET", LIST_PATH, auth, b""),
        times=HITS_IN_A_ROW,
        tally=True,
    )


def counted(
    label: str,
    redis_url: str,
    directory: Path,
    call: Callable[[], int],
    *,
    times: int = 1,
    tally: bool = False,
) -> Cost:
    """What `times` calls of `call` (a request, returning its status: the same every time) sent
    to PostgreSQL and Redis, and their mean time; with `tally`, Redis's commands by name."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The monitor outermost: its own commands are outside the client-side count.
    with (
        RedisMonitor(redis_url) as monitor,
        RedisRoundTrips() as trips,
        PostgresTrace(directory) as trace,
        CaptureQueriesContext(connection) as queries,
    ):
        began = time.perf_counter()
        statuses = {call() for _ in range(times)}
        elapsed = (time.perf_counter() - began) * 1000 / times
    (status,) = statuses
    commands, monitored = trips.commands, monitor.lines
    if tally:
        commands = tallied(commands)
        monitored = tallied(line for line in monitored if "in the script" not in line)
    return Cost(
        label,
        status,
        len(queries.captured_queries),
        len(trips.commands),
        trace.queries,
        commands,
        monitored,
        [(q["sql"], float(q["time"]) * 1000) for q in queries.captured_queries],
        elapsed,
    )


def tallied(names: Iterable[str]) -> list[str]:
    counts = collections.Counter(names)
    return [f"{name} x{count}" for name, count in sorted(counts.items())]


# --- report ---------------------------------------------------------------------------------


def versions_line() -> str:
    packages = [
        "django", "djangorestframework", "djangorestframework-simplejwt", "gunicorn",
        "psycopg", "redis", "django-redis", "django-prometheus", "prometheus-client",
        "django-filter",
    ]  # fmt: skip
    return ", ".join(f"{name} {version(name)}" for name in packages)


def ratios_by_round(measured: list[Measured], key: str) -> list[float]:
    """requests/s of scenario `key` over the bare view's, in each round that ran both."""
    rounds: dict[int, dict[str, float]] = {}
    for m in measured:
        rounds.setdefault(m.round, {})[m.scenario.key] = m.result.requests_per_second
    return [
        by_key[key] / by_key["bare"] for by_key in rounds.values() if {key, "bare"} <= set(by_key)
    ]


def ratios_between(measured: list[Measured], numerator: str, denominator: str) -> list[float]:
    """requests/s of `numerator` over `denominator`'s, in each round that ran both."""
    rounds: dict[int, dict[str, float]] = {}
    for m in measured:
        rounds.setdefault(m.round, {})[m.scenario.key] = m.result.requests_per_second
    return [
        by_key[numerator] / by_key[denominator]
        for by_key in rounds.values()
        if {numerator, denominator} <= set(by_key)
    ]


def ratio_line(ratios: list[float], *, percent: bool = True) -> str:
    def shown(ratio: float) -> str:
        return f"{ratio:.0%}" if percent else f"{ratio:.2f}x"

    if len(ratios) == 1:
        return shown(ratios[0])
    each = ", ".join(shown(ratio) for ratio in ratios)
    return f"{shown(statistics.median(ratios))} (the median of {len(ratios)} rounds: {each})"


def median_rate(measured: list[Measured], key: str) -> float | None:
    rates = [m.result.requests_per_second for m in measured if m.scenario.key == key]
    return statistics.median(rates) if rates else None


def against(ratios: list[float], target: float | None, *, percent: bool) -> str:
    """A ratio cell: the ratio (each round's, and their median), and the target's verdict."""
    if not ratios:
        return "n/a"
    cell = ratio_line(ratios, percent=percent)
    if target is None:
        return cell
    verdict = "met" if statistics.median(ratios) >= target else "missed"
    shown = f"{target:.0%}" if percent else f"{target:g}x"
    return f"{cell}, target {shown}: {verdict}"


def report_references(measured: list[Measured]) -> None:
    """Ours against the typical project, the no-middleware ceiling and the in-stack bare view,
    scenario by scenario (requests/s; with --rounds, per round and the median)."""
    rows = [
        (key, typical, note)
        for key, typical, note in COMPARED
        if any(m.scenario.key == key for m in measured)
    ]
    if not rows:
        return
    print()
    print("Ours against the references (requests/s, ours over theirs; targets: at least 1x the")
    print(
        f"typical project, {TYPICAL_CACHED_TARGET:g}x for the cached rows, and the cached list at "
        f"least {CEILING_TARGET:.0%} of the ceiling):"
    )
    print()
    print(
        "| scenario | ours | typical | ours / typical | ours / ceiling "
        "| ours / bare view in the stack | the typical project's answer |"
    )
    print("|---|---:|---:|---|---|---|---|")
    for key, typical, note in rows:
        ours_rate, typical_rate = median_rate(measured, key), median_rate(measured, typical)
        label = next(m.scenario.label for m in measured if m.scenario.key == key)
        typical_target = TYPICAL_CACHED_TARGET if key in CACHED else TYPICAL_TARGET
        ceiling_target = CEILING_TARGET if key == "list" else None
        print(
            f"| {label} | {ours_rate:,.0f} "
            f"| {f'{typical_rate:,.0f}' if typical_rate is not None else 'n/a'} "
            f"| {against(ratios_between(measured, key, typical), typical_target, percent=False)} "
            f"| {against(ratios_between(measured, key, 'ceiling'), ceiling_target, percent=True)} "
            f"| {against(ratios_by_round(measured, key), None, percent=True)} | {note} |"
        )


def report(
    measured: list[Measured],
    costs: list[Cost],
    options: argparse.Namespace,
    context: dict[str, str],
) -> None:
    print()
    print(f"Run {context['started']} on {context['machine']}")
    print(f"Load average (1, 5, 15 min) at start: {context['load_start']}")
    print(
        f"Server: gunicorn, {options.workers} sync workers, config/gunicorn.conf.py, "
        f"production settings, LOG_LEVEL={options.log_level}; "
        f"{context['products']:,} products in one tenant"
    )
    print(
        f"Load: wrk {context['wrk']}, {options.threads} threads, {options.connections} "
        f"connections, {options.warmup:g} s warm-up then {options.duration:g} s per scenario"
    )
    print(f"PostgreSQL {context['postgres']}, Redis {context['redis']}; {context['versions']}")
    print()
    print(
        "| scenario | requests/s | p50 ms | p99 ms | errors | cache hits / misses "
        "| load 1 min (before → after) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for m in measured:
        cache = f"{m.hits:,} / {m.misses:,}" if m.hits is not None else "n/a"
        print(
            f"| {m.label} | {m.result.requests_per_second:,.0f} | {m.result.p50_ms:.1f} "
            f"| {m.result.p99_ms:.1f} | {m.result.errors} | {cache} "
            f"| {m.load_before.split()[0]} → {m.load_after.split()[0]} |"
        )
    print()
    print("CPU time per request, ms (Redis: the whole server, which other work shares):")
    print()
    print("| scenario | gunicorn workers | PostgreSQL backends | Redis | wrk | total |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in measured:
        if m.cpu_ms:
            cpu = m.cpu_ms
            print(
                f"| {m.label} | {cpu['gunicorn']:.2f} | {cpu['postgres']:.2f} "
                f"| {cpu['redis']:.2f} | {cpu['wrk']:.2f} | {sum(cpu.values()):.2f} |"
            )
    ratios = ratios_by_round(measured, "list")
    if ratios:
        verdict = "met" if statistics.median(ratios) >= TARGET_RATIO else "missed"
        print()
        print(
            f"Cached list / bare view in the stack: {ratio_line(ratios)} "
            f"(target {TARGET_RATIO:.0%}: {verdict})",
        )
    traced = ratios_between(measured, "list-traced", "list")
    if traced:
        print(
            f"Cached list with tracing on / off: {ratio_line(traced)} (requests/s; "
            f"{float(TRACING_RATIO):.0%} of the traces sampled and exported)"
        )
    for graphql, rest in (("gql-list", "list"), ("gql-cold", "cold")):
        pairs = ratios_between(measured, rest, graphql)
        if pairs:
            verdict = "met" if statistics.median(pairs) <= GRAPHQL_TARGET else "missed"
            print(
                f"{graphql} costs {ratio_line(pairs, percent=False)} of {rest} per request "
                f"(REST's requests/s over GraphQL's; target at most {GRAPHQL_TARGET:g}x: {verdict})"
            )
    floors = ratios_by_round(measured, "rtt")
    if floors:
        print(
            f"Bare view + one Redis round trip / bare view: {ratio_line(floors)} (the most a "
            "request that asks Redis once can reach)"
        )
    report_references(measured)
    print()
    print("One request each, in process through config.wsgi.application (same settings, Redis):")
    print()
    print(
        "| request | status | ms | SQL logged by Django | sent to PostgreSQL | Redis round trips "
        "| Redis commands (client) | Redis commands (MONITOR) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for cost in costs:
        names = ", ".join(statement[:24] for statement, _ in cost.sql)
        logged = f"{cost.queries} ({names})" if cost.sql else "0"
        sent = f"{len(cost.postgres)} ({', '.join(cost.postgres)})" if cost.postgres else "0"
        print(
            f"| {cost.label} | {cost.status} | {cost.milliseconds:.1f} | {logged} | {sent} "
            f"| {cost.round_trips} | {', '.join(cost.commands)} | {', '.join(cost.monitored)} |"
        )
    for cost in costs:
        if cost.label.startswith("write"):
            print(f"\nThe statements of {cost.label}, with their time:")
            for statement, milliseconds in cost.sql:
                print(f"  {milliseconds:8.1f} ms  {statement[:160]}")


# --- main ---------------------------------------------------------------------------------------


def patch_script(ids: list[str], threads: int, versions: Mapping[str, int]) -> str:
    """LUA_PATCH for these products, starting from the versions they have (1 if not listed)."""
    known = ", ".join(f'["{pk}"] = {versions[pk]}' for pk in ids if pk in versions)
    quoted = ", ".join(f'"{pk}"' for pk in ids)
    return LUA_PATCH.format(ids=quoted, known=known, threads=threads)


def product_versions(database_url: str) -> dict[str, int]:
    """The products some write of the run moved past version 1, and their versions."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT id::text, version FROM catalog_product WHERE version > 1"
        ).fetchall()
    return dict(rows)


def scenarios(
    fixture: Fixture,
    directory: Path,
    threads: int,
    list_etag: str,
    round_number: int = 1,
    versions: Mapping[str, int] | None = None,
) -> list[Scenario]:
    auth = f"Authorization: Bearer {fixture.token}"
    detail = f"/api/v1/products/{fixture.detail_id}/"
    # The cold lists' prices, in cents: REST's and GraphQL's each their own range, every round
    # its own 20,000 (a few thousand requests a run, a cent apart).
    cold = (round_number - 1) * 20_000

    def lua(name: str, text: str) -> Path:
        path = directory / name
        path.write_text(text)
        return path

    # Products for the writes: warm-up and measured run each get their own, at the versions
    # `versions` gives (1 where it says nothing; the first three are count_costs' own).
    spare = fixture.product_ids[3:]
    patch_warm, patch_run = spare[:2_000], spare[2_000:10_000]
    ours = [
        Scenario("bare", "bare Django view (in the stack)", "/bench/bare/"),
        Scenario("rtt", "bare view + one Redis round trip", "/bench/round-trip/"),
        Scenario("list", "cached list", LIST_PATH, [auth], cache_kind="product_list"),
        Scenario(
            "list-traced",
            f"cached list, tracing on ({float(TRACING_RATIO):.0%} sampled, OTLP/HTTP)",
            LIST_PATH,
            [auth],
            cache_kind="product_list",
            server="traced",
        ),
        Scenario("detail", "cached detail", detail, [auth], cache_kind="product_detail"),
        Scenario(
            "304",
            "304 revalidation (list, If-None-Match)",
            LIST_PATH,
            [auth, f"If-None-Match: {list_etag}"],
            cache_kind="product_list",
        ),
        Scenario(
            "cold",
            "cold list (new price_min each request)",
            "/api/v1/products/",
            [auth],
            warmup_script=lua("cold-warm.lua", _fill(LUA_COLD_LIST, offset=cold, threads=threads)),
            script=lua("cold.lua", _fill(LUA_COLD_LIST, offset=cold + 5_000, threads=threads)),
            cache_kind="product_list",
        ),
        Scenario(
            "gql-list",
            "GraphQL: the cached list's page",
            "/graphql/",
            [auth],
            warmup_script=lua("gql-list.lua", LUA_GRAPHQL_LIST.format(body=graphql_body())),
            script=directory / "gql-list.lua",
            cache_kind="graphql",
        ),
        Scenario(
            "gql-cold",
            "GraphQL: the cold list's page (new priceMin each request)",
            "/graphql/",
            [auth],
            warmup_script=lua("gql-cold-warm.lua", _graphql_cold_script(cold + 10_000, threads)),
            script=lua("gql-cold.lua", _graphql_cold_script(cold + 15_000, threads)),
            cache_kind="graphql",
        ),
        Scenario(
            "patch",
            "write: PATCH stock with If-Match",
            "/api/v1/products/",
            [auth],
            warmup_script=lua("patch-warm.lua", patch_script(patch_warm, threads, versions or {})),
            script=lua("patch.lua", patch_script(patch_run, threads, versions or {})),
        ),
        Scenario(
            "create",
            "write: POST a product (unique SKU)",
            "/api/v1/products/",
            [auth],
            # Each round its own SKUs: a SKU an earlier round created is taken.
            warmup_script=lua("create-warm.lua", LUA_CREATE.format(run=f"w{round_number}")),
            script=lua("create.lua", LUA_CREATE.format(run=f"m{round_number}")),
        ),
    ]
    references = reference_scenarios(fixture, lua, threads, list_etag, round_number)
    return interleaved(ours, references)


def interleaved(ours: list[Scenario], references: list[Scenario]) -> list[Scenario]:
    """Each reference right after what it is compared with (the ceiling after the bare view,
    `typical-x` after `x`): a pair runs minutes apart at most, on a machine in the same state."""
    after = {"ceiling": "bare", **{typical: key for key, typical, _ in COMPARED}}
    ordered = list(ours)
    for reference in references:
        keys = [scenario.key for scenario in ordered]
        anchor = after[reference.key]
        ordered.insert(keys.index(anchor) + 1 if anchor in keys else len(ordered), reference)
    return ordered


def reference_scenarios(
    fixture: Fixture,
    lua: Callable[[str, str], Path],
    threads: int,
    list_etag: str,
    round_number: int,
) -> list[Scenario]:
    """The ceiling and the typical project's five endpoints, driven as ours are: the same
    paths, headers and Lua scripts, on products and prices of their own."""
    auth = f"Authorization: Bearer {fixture.token}"
    detail = f"/api/v1/products/{fixture.detail_id}/"
    # Cold prices past the ranges of ours (REST's and GraphQL's), every round its own.
    cold = (round_number - 1) * 20_000 + 40_000
    # Products to PATCH from the other end of the list, apart from ours at 20,000 products and
    # more (a smaller catalog shares some, which does no harm: the typical project writes back
    # the version it read, and the scenarios run one at a time).
    spare = fixture.product_ids[:2:-1]
    patch_warm, patch_run = spare[:2_000], spare[2_000:10_000]
    return [
        Scenario(
            "ceiling",
            "ceiling: the cached list's bytes, no middleware",
            LIST_PATH,
            server="ceiling",
        ),
        Scenario("typical-list", "typical: cached list", LIST_PATH, [auth], server="typical"),
        Scenario("typical-detail", "typical: cached detail", detail, [auth], server="typical"),
        Scenario(
            "typical-304",
            "typical: the 304 request (answered 200 from cache_page)",
            LIST_PATH,
            [auth, f"If-None-Match: {list_etag}"],
            server="typical",
        ),
        Scenario(
            "typical-cold",
            "typical: cold list (new price_min each request)",
            "/api/v1/products/",
            [auth],
            warmup_script=lua(
                "typical-cold-warm.lua", _fill(LUA_COLD_LIST, offset=cold, threads=threads)
            ),
            script=lua(
                "typical-cold.lua", _fill(LUA_COLD_LIST, offset=cold + 5_000, threads=threads)
            ),
            server="typical",
        ),
        Scenario(
            "typical-patch",
            "typical: PATCH stock (If-Match ignored)",
            "/api/v1/products/",
            [auth],
            warmup_script=lua("typical-patch-warm.lua", patch_script(patch_warm, threads, {})),
            script=lua("typical-patch.lua", patch_script(patch_run, threads, {})),
            server="typical",
        ),
        Scenario(
            "typical-create",
            "typical: POST a product (unique SKU)",
            "/api/v1/products/",
            [auth],
            warmup_script=lua(
                "typical-create-warm.lua", LUA_CREATE.format(run=f"tw{round_number}")
            ),
            script=lua("typical-create.lua", LUA_CREATE.format(run=f"tm{round_number}")),
            server="typical",
        ),
    ]


def _fill(template: str, **values: int) -> str:
    """str.format for Lua text that has braces of its own: only {name} placeholders."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def environment_for(
    *, database_url: str, redis_url: str, directory: Path, log_level: str
) -> dict[str, str]:
    return {
        **app_environment(
            database_url=database_url,
            redis_url=redis_url,
            key_prefix=KEY_PREFIX,
            # config.settings.production plus /bench/bare/ (scripts/bench_settings.py).
            settings_module="bench_settings",
            pythonpath=os.pathsep.join([str(REPO), str(SCRIPTS)]),
        ),
        "RATELIMIT_ENABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "prometheus"),
        # Logging every request would measure the log handler (docs/serving.md).
        "LOG_LEVEL": log_level,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="passes over the scenarios; the ratios to the bare view, the ceiling and the "
        "typical project are given per pass, and their median",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (as deployed)")
    parser.add_argument("--products", type=int, default=100_000)
    add_service_arguments(parser, database="bench_catalog", key_prefix=KEY_PREFIX)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--only",
        help="comma-separated scenario keys: "
        "bare,rtt,list,list-traced,detail,304,cold,gql-list,gql-cold,patch,create, and the "
        "references: ceiling,typical-list,typical-detail,typical-304,typical-cold,"
        "typical-patch,typical-create",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the workers with py-spy during the cached-list run, to this folded file",
    )
    options = parser.parse_args()
    for name in ("duration", "warmup"):
        seconds = getattr(options, name)
        if seconds < 1 or seconds != int(seconds):
            parser.error(f"--{name} is whole seconds, at least 1 (what wrk takes)")
    if wrk_version() == "absent":
        print("error: wrk is needed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    # A SIGTERM (a CI timeout, a kill) must still clean up: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    database_url = f"{options.postgres.rstrip('/')}/{options.database}"
    run_lock = hold_run_lock(database_url, "bench_catalog")  # noqa: F841  (held until the end)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_start = load_average()
    server = None
    servers: list[subprocess.Popen] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-catalog-") as workdir,
        contextlib.ExitStack() as stack,
    ):
        directory = Path(workdir)
        (directory / "prometheus").mkdir()
        environment = environment_for(
            database_url=database_url,
            redis_url=options.redis_url,
            directory=directory,
            log_level=options.log_level,
        )
        os.environ.update(environment)
        sys.path[:0] = [str(REPO)]
        delete_redis_keys(options.redis_url, KEY_PREFIX)
        recreate_database(database_url)
        wanted = set(options.only.split(",")) if options.only else None
        typical_wanted = wanted is None or any(key.startswith("typical-") for key in wanted)
        try:
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connections

            print(f"migrating {options.database} ...", flush=True)
            call_command("migrate", interactive=False, verbosity=0)
            print(f"seeding {options.products:,} products ...", flush=True)
            began = time.monotonic()
            fixture = seed(products=options.products)
            connections.close_all()
            analyze(database_url)
            print(f"seeded in {time.monotonic() - began:.0f} s", flush=True)

            port = free_port()
            base_url = f"http://{HOST}:{port}"
            log_path = directory / "server.log"
            log = log_path.open("ab")

            def command_for(port: int, application: str = "config.wsgi:application") -> list[str]:
                return [
                    sys.executable, "-m", "gunicorn", application,
                    "--config", "config/gunicorn.conf.py",
                    "--bind", f"{HOST}:{port}", "--workers", str(options.workers),
                ]  # fmt: skip

            command = command_for(port)
            server = subprocess.Popen(  # noqa: S603  (a fixed command line)
                command,
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=log,
            )
            wait_until_serving(base_url, server, log_path)
            processes = Processes(
                server.pid, server_url(database_url), options.database, options.redis_url
            )
            auth = {"Authorization": f"Bearer {fixture.token}"}
            # Warm what the cached scenarios read, in every worker's Redis-backed cache alike.
            for path in (LIST_PATH, f"/api/v1/products/{fixture.detail_id}/"):
                response = httpx.get(base_url + path, headers=auth, timeout=30)
                response.raise_for_status()
            list_etag = httpx.get(base_url + LIST_PATH, headers=auth).headers["ETag"]

            print("counting one cached hit in process ...", flush=True)
            costs = count_costs(fixture, f"{HOST}:{port}", options.redis_url, list_etag, directory)
            # Its writes changed the first page: the ETag the 304 run revalidates is taken now.
            list_etag = revalidated_etag(base_url, auth)

            targets = {"ours": Served(base_url, processes)}
            typical_index = TypicalIndex(database_url)
            if wanted is None or "list-traced" in wanted:
                sink = stack.enter_context(SpanSink())
                traced_server, targets["traced"] = start_traced_server(
                    command_for, environment, directory, sink, database_url, options
                )
                servers.append(traced_server)
                for _ in range(2):  # every worker's first hit, and the exporter's first batch
                    httpx.get(
                        targets["traced"].url + LIST_PATH, headers=auth, timeout=30
                    ).raise_for_status()
            if wanted is None or "ceiling" in wanted:
                # The bytes the cached list answers now, which every later hit answers.
                page = httpx.get(base_url + LIST_PATH, headers=auth, timeout=30)
                page.raise_for_status()
                (directory / "ceiling-body").write_bytes(page.content)
                ceiling_server, targets["ceiling"] = start_server(
                    command_for(free_port(), "django.core.wsgi:get_wsgi_application()"),
                    {
                        **environment,
                        "DJANGO_SETTINGS_MODULE": "bench_ceiling",
                        "BENCH_CEILING_BODY": str(directory / "ceiling-body"),
                        "BENCH_CEILING_CONTENT_TYPE": page.headers["Content-Type"],
                    },
                    directory,
                    "ceiling",
                    database_url,
                    options,
                )
                servers.append(ceiling_server)
                served = httpx.get(targets["ceiling"].url + LIST_PATH, timeout=30)
                if served.content != page.content:
                    raise RuntimeError("the ceiling does not answer the cached list's bytes")
            if typical_wanted:
                typical_server, targets["typical"] = start_server(
                    command_for(free_port(), "django.core.wsgi:get_wsgi_application()"),
                    {
                        **environment,
                        "DJANGO_SETTINGS_MODULE": "bench_typical.settings",
                        "CACHE_KEY_PREFIX": TYPICAL_CACHE_PREFIX,
                        "BENCH_TENANT_ID": fixture.tenant_id,
                    },
                    directory,
                    "typical",
                    database_url,
                    options,
                )
                servers.append(typical_server)
                check_typical(targets["typical"].url, base_url, fixture, auth, list_etag)
            measured = []
            for round_number in range(1, options.rounds + 1):
                if round_number > 1:
                    # The writes of the rounds before changed the first page, and the versions
                    # of the products PATCHed with If-Match.
                    list_etag = revalidated_etag(base_url, auth)
                # Each round its own cold prices: a price an earlier round asked is cached.
                selected = [
                    scenario
                    for scenario in scenarios(
                        fixture,
                        directory,
                        options.threads,
                        list_etag,
                        round_number,
                        product_versions(database_url) if round_number > 1 else {},
                    )
                    if wanted is None or scenario.key in wanted
                ]
                for scenario in selected:
                    print(f"running: {scenario.label} (round {round_number}) ...", flush=True)
                    if scenario.server != "ceiling":
                        typical_index.want(scenario.server == "typical")
                    profiler = None
                    if options.profile and scenario.key == "list" and round_number == 1:
                        profiler = start_profiler(server.pid, options)
                    target = targets[scenario.server]
                    result = measure(scenario, target.url, options, target.processes)
                    result.round = round_number
                    measured.append(result)
                    if profiler is not None:
                        profiler.wait(timeout=options.warmup + options.duration + 60)
                        print(f"profile written to {options.profile}", flush=True)
                        summarize_profile(options.profile)

            report(
                measured,
                costs,
                options,
                {
                    "started": started,
                    "machine": machine(),
                    "load_start": load_start,
                    "products": options.products,
                    "wrk": wrk_version(),
                    "postgres": postgres_version(database_url),
                    "redis": redis_version(options.redis_url),
                    "versions": versions_line(),
                },
            )
            print(f"\nLoad average at the end: {load_average()}")
        finally:
            if server is not None:
                stop(server)
            for other in servers:
                stop(other)
            clean_up(database_url=database_url, redis_url=options.redis_url, key_prefix=KEY_PREFIX)
    return 0


class SpanSink:
    """What a collector is to the traced server: OTLP/HTTP exports, read whole and answered 200
    (an empty ExportTraceServiceResponse), on a free loopback port, in a thread of this script."""

    def __init__(self) -> None:
        sink = self
        self.exports = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}"

    def __enter__(self) -> "SpanSink":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def revalidated_etag(base_url: str, auth: dict[str, str]) -> str:
    """The cached list's current ETag, checked to be answered with a 304."""
    list_etag = httpx.get(base_url + LIST_PATH, headers=auth, timeout=30).headers["ETag"]
    revalidated = httpx.get(
        base_url + LIST_PATH, headers={**auth, "If-None-Match": list_etag}, timeout=30
    )
    if revalidated.status_code != 304:
        raise RuntimeError(f"If-None-Match got {revalidated.status_code}, not 304")
    return list_etag


@dataclass
class Served:
    """A server of the run: where to send its scenarios, and its processes for CPU time."""

    url: str
    processes: Processes


def start_server(
    command: list[str],
    environment: dict[str, str],
    directory: Path,
    name: str,
    database_url: str,
    options: argparse.Namespace,
) -> tuple[subprocess.Popen, Served]:
    """Another gunicorn of the run, with metrics and log files of its own, once it serves."""
    metrics = directory / f"prometheus-{name}"
    metrics.mkdir()
    log_path = directory / f"server-{name}.log"
    process = subprocess.Popen(  # noqa: S603  (a fixed command line)
        command,
        cwd=REPO,
        env={**environment, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = command[command.index("--bind") + 1]
    served = Served(
        f"http://{url}",
        Processes(process.pid, server_url(database_url), options.database, options.redis_url),
    )
    wait_until_serving(served.url, process, log_path)
    return process, served


def start_traced_server(
    command_for: Callable[[int], list[str]],
    environment: dict[str, str],
    directory: Path,
    sink: SpanSink,
    database_url: str,
    options: argparse.Namespace,
) -> tuple[subprocess.Popen, Served]:
    """The same gunicorn, exporting spans to `sink` at TRACING_RATIO (kernel/telemetry.py)."""
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER_ARG": TRACING_RATIO,
        "OTEL_SERVICE_NAME": "bench-catalog",
    }
    return start_server(
        command_for(free_port()),
        {**environment, **tracing},
        directory,
        "traced",
        database_url,
        options,
    )


class TypicalIndex:
    """The index the typical project's model declares (`created_at`, db_index=True), which its
    CursorPagination's ordering needs (the catalog's own indexes all start with the tenant),
    present while a `typical-*` scenario runs and only then: on the shared table PostgreSQL
    would plan our list on it too (a smaller index, with one tenant), and our writes would
    maintain it. The typical project's writes do, as its own would."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.present = False

    def want(self, present: bool) -> None:
        if present == self.present:
            return
        import psycopg

        statement = (
            f"CREATE INDEX {TYPICAL_INDEX} ON catalog_product (created_at)"
            if present
            else f"DROP INDEX {TYPICAL_INDEX}"
        )
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(statement)
        self.present = present


def check_typical(
    url: str, ours: str, fixture: Fixture, auth: dict[str, str], list_etag: str
) -> None:
    """Each of the typical project's endpoints answers the bench's token with a 2xx (the 304
    request with a 200, as the report says), and its list the same products, in the same order,
    as ours: it serves the same page."""
    detail = f"/api/v1/products/{fixture.detail_id}/"
    pages = []
    for base in (url, ours):
        response = httpx.get(base + LIST_PATH, headers=auth, timeout=30)
        response.raise_for_status()
        pages.append([product["id"] for product in response.json()["results"]])
    if pages[0] != pages[1]:
        raise RuntimeError("the typical project's first page is not ours")
    for path in (detail, f"{LIST_PATH}&price_min=1.00"):
        httpx.get(url + path, headers=auth, timeout=30).raise_for_status()
    revalidated = httpx.get(
        url + LIST_PATH, headers={**auth, "If-None-Match": list_etag}, timeout=30
    )
    if revalidated.status_code != 200:
        raise RuntimeError(f"the typical project answered If-None-Match {revalidated.status_code}")
    spare = fixture.product_ids[-1]
    httpx.patch(
        f"{url}/api/v1/products/{spare}/", json={"stock": 7}, headers=auth, timeout=30
    ).raise_for_status()
    httpx.post(
        f"{url}/api/v1/products/",
        json={"sku": "TYPICAL-CHECK", "name": "Checked", "price": "1.00", "stock": 1},
        headers=auth,
        timeout=30,
    ).raise_for_status()


def start_profiler(master_pid: int, options: argparse.Namespace) -> subprocess.Popen:
    """py-spy on the gunicorn master and its workers for the measured part of the run.

    py-spy is a measuring tool, not a dependency: install it into the venv for the run only
    (`uv pip install --python .venv/bin/python py-spy`). Folded stacks ("raw" format), one line
    per stack with its sample count.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [
        py_spy, "record", "--pid", str(master_pid), "--subprocesses",
        "--rate", "250", "--format", "raw", "--output", str(options.profile),
        "--duration", str(int(options.warmup + options.duration)), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(  # noqa: S603  (a fixed command line)
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 40) -> None:
    """The functions the workers' request samples were in (inclusive), from py-spy's folded
    stacks: where the time of a cached-list request goes."""
    inclusive: dict[str, int] = {}
    requests = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        starts = [i for i, frame in enumerate(frames) if frame.startswith("WSGIHandler.__call__")]
        if not starts:
            continue  # gunicorn waiting for a connection, the master
        requests += int(count)
        for frame in set(frames[starts[0] :]):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    print(f"\nWhere the cached list's time goes ({requests:,} samples inside requests):")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * count / requests:5.1f}%  {frame}")


if __name__ == "__main__":
    sys.exit(main())
