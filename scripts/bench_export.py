"""A tenant's data export at 10,000, 100,000 and 1,000,000 products: its memory stays flat.

    .venv/bin/python scripts/bench_export.py [--products 1000000] [--sizes 10000,100000,1000000]

Needs PostgreSQL and Redis on localhost (docs/benchmarks.md). The script

1. drops and creates the database `bench_export`, migrates it, and seeds one tenant per size
   (on a `bench` plan whose product quota is far above the run's), each with 40 categories and
   its products: bulk SQL (`INSERT … SELECT … FROM generate_series`), 100,000 rows a statement,
   through the application's own connection in the tenant's scope, so that row-level security
   checks every row and the product-count triggers keep `catalog_productcount` right (checked
   against a COUNT before the exports run); then `VACUUM ANALYZE`;
2. runs each export in a fresh process of its own (`--child export`): production settings,
   the application's restricted role under row-level security (kernel/tenancy/dbbackend), the
   job started through `tenant_export_start()` as the tenant's owner would be (a principal
   resolved as a request resolves it), then `data_export_task` run in that process, as a worker
   runs it; and a process that only boots Django (`--child baseline`);
3. prints, as Markdown, per size: the archive's rows, the seconds the task took, rows/s, the
   archive's size, and the process's peak RSS, next to the baseline's; then drops the database
   and deletes its Redis keys (only those under its own prefix: the server is shared).

Why a process per export: a peak is a high-water mark for the process's whole life, that never
comes down. Measured before and after in one process, a second export would show no growth below
the first's peak, and memory the allocator kept from the seeding would hide the export's own. A
fresh process per size starts each export from the same place, and the baseline process shows
that place. Each export process reads its RSS just before the export, resets its high-water mark
(`/proc/self/clear_refs`), and reads the peak again after it: the export's own peak, and its
growth over the RSS it started from. Peaks are Linux's VmHWM, not `ru_maxrss`, which a child
inherits from the process that started it (see `memory_mb()`).
"""

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from benchlib import (
    add_service_arguments,
    app_environment,
    clean_up,
    delete_redis_keys,
    hold_run_lock,
    load_average,
    machine,
    postgres_version,
    recreate_database,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
KEY_PREFIX = "bench-export"  # every Redis key of the run starts with it
BATCH = 100_000  # rows per INSERT statement
CHILD_TIMEOUT = 3600  # seconds; an export of 1,000,000 products takes about a minute here

# --- seeding ------------------------------------------------------------------------------------

ADJECTIVES = ["red", "blue", "green", "black", "white", "steel", "oak", "linen", "compact"]
NOUNS = ["chair", "table", "lamp", "kettle", "mug", "backpack", "jacket", "shelf", "clock"]
COLORS = ["red", "blue", "green", "black", "white", "grey"]
SIZES = ["XS", "S", "M", "L", "XL"]
TAGS = ["new", "sale", "eco", "bestseller", "limited", "gift", "outdoor", "kitchen", "office"]

# One statement writes rows `start` to `stop` of the tenant in scope: the tenant's id comes from
# the scope the backend set for the transaction (row security's WITH CHECK refuses any other),
# the values vary with the row's number (multiplicative hashes, so that neighbours differ): a
# name, a description of about 110 characters, 0 to 3 tags, two attributes, a price, a stock.
PRODUCTS_SQL = """
INSERT INTO catalog_product (
    id, tenant_id, sku, name, description, price, currency, stock, is_active, category_id,
    attributes, tags, created_at, updated_at, version
)
SELECT
    gen_random_uuid(),
    current_setting('app.tenant_id')::uuid,
    'SKU-' || lpad(i::text, 7, '0'),
    initcap(word.adjective) || ' ' || word.noun || ' ' || i,
    'A ' || word.adjective || ' ' || word.noun || ' for everyday use. Model ' || i
        || ', made to last, easy to clean, and shipped in recycled packaging.',
    (100 + (i::bigint * 7919) %% 99900) / 100.0,
    'EUR',
    (i::bigint * 31) %% 501,
    i %% 20 <> 0,
    (%(categories)s::uuid[])[1 + (i::bigint * 97) %% cardinality(%(categories)s::uuid[])],
    jsonb_build_object(
        'color', (%(colors)s::text[])[1 + (i::bigint * 2246822519) %% 6],
        'size', (%(sizes)s::text[])[1 + (i::bigint * 3266489917) %% 5]
    ),
    to_jsonb((%(tags)s::text[])[1 + i %% 9 : i %% 9 + (i::bigint * 668265263) %% 4]),
    now() - make_interval(secs => %(stop)s - i),
    now() - make_interval(secs => %(stop)s - i),
    1
FROM generate_series(%(start)s::int, %(stop)s::int) AS i,
LATERAL (
    SELECT (%(adjectives)s::text[])[1 + (i::bigint * 2654435761) %% 9] AS adjective,
           (%(nouns)s::text[])[1 + (i::bigint * 40503) %% 9] AS noun
) AS word
"""


def seed(size: int) -> dict:
    """A tenant on the `bench` plan, its owner, 40 categories and `size` products."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from catalog.models import Category, Product
    from catalog.selectors import product_total
    from kernel.context import tenant_context
    from kernel.tenants import tenant_create

    user = get_user_model().objects.create_user(
        f"owner-{size}@example.com", secrets.token_urlsafe(16), name=f"Owner {size}"
    )
    tenant = tenant_create(
        name=f"Export {size:,}", slug=f"export-{size}", owner=user, plan_code="bench"
    )
    began = time.monotonic()
    with tenant_context(tenant.id):
        roots = Category.objects.bulk_create(
            Category(name=f"Department {i}", slug=f"department-{i}") for i in range(8)
        )
        leaves = Category.objects.bulk_create(
            Category(name=f"{root.name} / {j}", slug=f"{root.slug}-{j}", parent=root)
            for root in roots
            for j in range(4)
        )
        categories = [category.pk for category in leaves]
        for start in range(1, size + 1, BATCH):
            stop = min(start + BATCH - 1, size)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    PRODUCTS_SQL,
                    {
                        "start": start,
                        "stop": stop,
                        "categories": categories,
                        "adjectives": ADJECTIVES,
                        "nouns": NOUNS,
                        "colors": COLORS,
                        "sizes": SIZES,
                        "tags": TAGS,
                    },
                )
            print(f"  {stop:,} of {size:,} products", flush=True)
        with transaction.atomic():
            counted, kept = Product.objects.count(), product_total()
    if counted != size or kept != size:
        raise RuntimeError(f"{size:,} products wanted, {counted:,} counted, {kept:,} kept")
    return {
        "tenant_id": str(tenant.id),
        "owner_id": str(user.pk),
        "seconds": time.monotonic() - began,
    }


def bench_plan() -> None:
    from kernel.tenancy.models import Plan

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


def analyze(database_url: str) -> None:
    """What autovacuum would do soon after a bulk load: statistics and the visibility map."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# --- the child processes ------------------------------------------------------------------------


def memory_mb() -> dict[str, float]:
    """The process's resident set now (VmRSS) and its peak (VmHWM), in MB (Linux /proc).

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the peak of the process that started
    this one into it (exec keeps the higher of the two in the process's signal struct; with
    vfork, which subprocess uses, that is the parent's whole peak), so every child of a parent
    that seeded a million rows would report the parent's peak. VmHWM is this process's own.
    """
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        name: int(fields[key].split()[0]) / 1024
        for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))
    }


def reset_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux 4.0+), so that the peak read next is the
    export's own, not boot's; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_baseline() -> dict:
    """Django booted, the export's modules imported, a connection made and one query run: what
    any worker process holds before it exports anything."""
    import django

    django.setup()
    from django.db import connection

    import kernel.exports.services  # noqa: F401  (what the export process imports)

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    memory = memory_mb()
    return {"rss_mb": memory["rss"], "peak_rss_mb": memory["peak"]}


def child_export(tenant_id: str, owner_id: str) -> dict:
    """One tenant export, as the API starts it and a worker runs it."""
    import django

    django.setup()
    from kernel.context import tenant_context
    from kernel.exports.services import data_export_task, tenant_export_start
    from kernel.models import Job
    from kernel.permissions import Perm
    from kernel.principals import resolve_principal

    with tenant_context(tenant_id):
        # As the API's authentication resolves the caller of POST /tenant/export/.
        principal = resolve_principal(
            tenant_id=tenant_id, user_id=owner_id, session_id=secrets.token_hex(16)
        ).principal
        if principal is None or not principal.has_permission(Perm.TENANT_EXPORT):
            raise RuntimeError("the tenant's owner may not export")
        # Commits the pending job; its commit callback queues the task on the broker (under the
        # run's key prefix, deleted at the end): no worker takes it, this process runs it.
        job = tenant_export_start(actor=principal)
    before = memory_mb()
    reset = reset_peak()
    began = time.perf_counter()
    with tenant_context(tenant_id):  # as the worker restores the tenant the task was sent under
        status = data_export_task(str(job.pk))
    seconds = time.perf_counter() - began
    after = memory_mb()
    with tenant_context(tenant_id):
        job = Job.objects.get(pk=job.pk)
    if status != Job.Status.SUCCEEDED:
        raise RuntimeError(f"the export ended {status}: {job.detail}")
    files = job.result["files"]
    return {
        "rows": sum(file["rows"] for file in files.values()),
        "products": files["products.ndjson"]["rows"],
        "seconds": seconds,
        "archive_bytes": job.result["size"],
        "rss_before_mb": before["rss"],
        # The peak since the reset: the export's own (None where the kernel refused the reset).
        "export_peak_mb": after["peak"] if reset else None,
        "peak_rss_mb": max(before["peak"], after["peak"]),  # the process's whole life
    }


def run_child(arguments: list[str], environment: dict[str, str]) -> dict:
    completed = subprocess.run(  # noqa: S603  (this script, fixed arguments)
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{arguments} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------


def environment_for(*, database_url: str, redis_url: str, directory: Path) -> dict[str, str]:
    # As the worker runs: production settings (DEBUG off), the restricted database role.
    return {
        **app_environment(
            database_url=database_url,
            redis_url=redis_url,
            key_prefix=KEY_PREFIX,
            settings_module="config.settings.production",
            pythonpath=os.pathsep.join([str(REPO), str(SCRIPTS)]),
        ),
        # The archives, in the run's temporary directory (the filesystem storage, as by default).
        "EXPORTS_ROOT": str(directory / "exports"),
    }


def versions_line() -> str:
    packages = ["django", "psycopg", "celery"]
    return ", ".join(f"{name} {version(name)}" for name in packages)


def report(rows: list[tuple[int, dict]], baseline: dict, seeded: dict, info: dict) -> None:
    print(
        f"\nRun {info['started']}, {info['machine']}; PostgreSQL {info['postgres']}; "
        f"{info['versions']}. Load average at start {info['load_start']}."
    )
    print(
        "Seeding (INSERT … SELECT, in the tenant's scope): "
        + ", ".join(f"{size:,} products in {s['seconds']:.0f} s" for size, s in seeded.items())
    )
    print()
    print(
        "| products | rows in the archive | seconds | rows/s | archive MB "
        "| RSS before the export MB | peak RSS during the export MB | growth MB "
        "| peak RSS of the process MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| baseline: Django booted, no export | | | | | {baseline['rss_mb']:.1f} | | "
        f"| {baseline['peak_rss_mb']:.1f} |"
    )
    for size, result in rows:
        peak = result["export_peak_mb"]
        during = "n/a" if peak is None else f"{peak:.1f}"
        growth = "n/a" if peak is None else f"{peak - result['rss_before_mb']:+.1f}"
        print(
            f"| {size:,} | {result['rows']:,} | {result['seconds']:.1f} "
            f"| {result['rows'] / result['seconds']:,.0f} | {result['archive_bytes'] / 1e6:.1f} "
            f"| {result['rss_before_mb']:.1f} | {during} | {growth} "
            f"| {result['peak_rss_mb']:.1f} |"
        )
    first, last = rows[0][1], rows[-1][1]
    print(
        f"\nPeak RSS of the process, {rows[0][0]:,} → {rows[-1][0]:,} products: "
        f"{first['peak_rss_mb']:.1f} → {last['peak_rss_mb']:.1f} MB "
        f"(the baseline's: {baseline['peak_rss_mb']:.1f} MB)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--products", type=int, default=1_000_000, help="the largest tenant's products"
    )
    parser.add_argument(
        "--sizes",
        help="comma-separated product counts, one tenant and one export each "
        "(default: 1 %%, 10 %% and all of --products)",
    )
    add_service_arguments(parser, database="bench_export", key_prefix=KEY_PREFIX)
    parser.add_argument("--child", choices=["baseline", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--tenant", help=argparse.SUPPRESS)
    parser.add_argument("--owner", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child == "baseline":
        print(json.dumps(child_baseline()))
        return 0
    if options.child == "export":
        print(json.dumps(child_export(options.tenant, options.owner)))
        return 0

    if options.sizes:
        sizes = sorted({int(part) for part in options.sizes.split(",")})
    else:
        sizes = sorted(
            {max(1, options.products // 100), max(1, options.products // 10), options.products}
        )
    # A SIGTERM (a CI timeout, a kill) must still clean up: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    database_url = f"{options.postgres.rstrip('/')}/{options.database}"
    run_lock = hold_run_lock(database_url, "bench_export")  # noqa: F841  (held until the end)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as workdir:
        environment = environment_for(
            database_url=database_url, redis_url=options.redis_url, directory=Path(workdir)
        )
        os.environ.update(environment)
        sys.path[:0] = [str(REPO)]
        delete_redis_keys(options.redis_url, KEY_PREFIX)
        recreate_database(database_url)
        try:
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connections

            print(f"migrating {options.database} ...", flush=True)
            call_command("migrate", interactive=False, verbosity=0)
            bench_plan()
            # Each seeding statement is slow by design: not a line of the slow-query log each.
            logging.getLogger("tenantapi.db").setLevel(logging.ERROR)
            seeded = {}
            for size in sizes:
                print(f"seeding a tenant with {size:,} products ...", flush=True)
                seeded[size] = seed(size)
            connections.close_all()
            print("VACUUM ANALYZE ...", flush=True)
            analyze(database_url)

            print("baseline: a process that only boots Django ...", flush=True)
            baseline = run_child(["--child", "baseline"], environment)
            rows = []
            for size in sizes:
                print(f"exporting {size:,} products ...", flush=True)
                tenant = seeded[size]
                result = run_child(
                    ["--child", "export", "--tenant", tenant["tenant_id"],
                     "--owner", tenant["owner_id"]],
                    environment,
                )  # fmt: skip
                if result["products"] != size:
                    raise RuntimeError(f"{result['products']:,} products exported of {size:,}")
                print(f"  {json.dumps(result)}", flush=True)
                rows.append((size, result))
            report(
                rows,
                baseline,
                seeded,
                {
                    "started": started,
                    "machine": machine(),
                    "load_start": load_start,
                    "postgres": postgres_version(database_url),
                    "versions": versions_line(),
                },
            )
            print(f"\nLoad average at the end: {load_average()}")
        finally:
            clean_up(database_url=database_url, redis_url=options.redis_url, key_prefix=KEY_PREFIX)
    return 0


if __name__ == "__main__":
    sys.exit(main())
