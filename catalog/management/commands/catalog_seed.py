"""`catalog_seed --tenant <slug> --count 100000`: N generated products, imported as a CSV file
through the bulk import (the same checks, job and Celery task as POST /api/v1/products/import/).

The benchmark seeds its tenant with it; it also measures the import (docs/catalog.md, "Bulk
import, measured"). With a broker configured the task goes to the workers and the command waits
for the job; `--inline` runs it in this process instead, through Celery's eager path.
"""

import random
import time
import uuid
from pathlib import Path
from typing import Any

from celery import current_app as celery_app
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import imports, services
from catalog.imports import COLUMNS
from catalog.models import Category
from kernel.context import tenant_context
from kernel.models import Job
from kernel.tenancy.models import Tenant

# fmt: off
WORDS = [
    "blue", "red", "green", "black", "white", "linen", "cotton", "wool", "steel", "oak",
    "walnut", "ceramic", "glass", "classic", "compact", "deluxe", "travel", "kitchen", "garden",
    "office", "outdoor", "summer", "winter", "vintage", "modern",
]
# fmt: on
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "CHF")


class Command(BaseCommand):
    help = (
        "Generate --count products as a CSV file and import them into the tenant --tenant "
        "through the bulk import; prints the job's counts and how long it took."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")
        parser.add_argument("--count", type=int, default=100_000, help="Products (100000).")
        parser.add_argument(
            "--categories", type=int, default=20, help="Categories to spread them over (20)."
        )
        parser.add_argument("--prefix", default="SEED", help="SKU prefix (SEED → SEED-000001).")
        parser.add_argument("--random-seed", type=int, default=1, help="For repeatable data.")
        parser.add_argument("--output", type=Path, help="Also write the CSV file here.")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Run the import task in this process (Celery's eager path), even with a broker.",
        )
        parser.add_argument(
            "--timeout", type=float, default=3600, help="Seconds to wait for a worker (3600)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug '{options['tenant']}'.")
        if options["count"] < 1:
            raise CommandError("--count must be at least 1.")
        # Eager for this command only: whoever calls it (a test, scripts/run) finds Celery's
        # setting as it was.
        was_eager = celery_app.conf.task_always_eager
        if options["inline"]:
            celery_app.conf.task_always_eager = True
        try:
            self._seed(tenant, options)
        finally:
            celery_app.conf.task_always_eager = was_eager

    def _seed(self, tenant: Tenant, options: dict[str, Any]) -> None:
        with tenant_context(tenant.id):
            slugs = self._categories(tenant, options["categories"])
            started = time.monotonic()
            content = generate_csv(
                count=options["count"],
                prefix=options["prefix"],
                category_slugs=slugs,
                # Repeatable test data, not secrets.
                rng=random.Random(options["random_seed"]),  # noqa: S311
            )
            generated = time.monotonic()
            if options["output"]:
                options["output"].write_bytes(content)
            self.stdout.write(
                f"Generated {options['count']} rows ({len(content) / 1e6:.1f} MB) "
                f"in {generated - started:.1f} s."
            )
            source = imports.import_file_read(
                name="seed.csv", content_type="text/csv", content=content
            )
            # Queued on commit: run inline (eager) it has finished when this returns.
            job = imports.import_start(actor=None, source=source)
            job = self._wait(job.pk, timeout=options["timeout"])
            elapsed = time.monotonic() - generated

        self.stdout.write(
            f"Job {job.pk}: {job.status}, {job.succeeded} imported, {job.failed} refused, "
            f"in {elapsed:.1f} s ({job.total / elapsed:,.0f} rows/s; "
            f"batches of {settings.CATALOG_IMPORT_BATCH_SIZE})."
        )
        for error in job.errors[:5]:
            self.stdout.write(f"  row {error['row']}: {error.get('field', '')} {error['message']}")
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(job.detail or "The import failed.")

    def _categories(self, tenant: Tenant, count: int) -> list[str]:
        """The slugs of `count` seed categories, made if missing."""
        slugs = [f"seed-{n}" for n in range(1, count + 1)]
        existing = set(Category.objects.filter(slug__in=slugs).values_list("slug", flat=True))
        for slug in slugs:
            if slug not in existing:
                services.category_create(
                    tenant=tenant,
                    actor=None,
                    data={"name": slug.replace("-", " ").title(), "slug": slug},
                )
        return slugs

    def _wait(self, job_id: uuid.UUID, *, timeout: float) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = Job.objects.get(pk=job_id)
            if job.status in Job.FINISHED:
                return job
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Job {job_id} is still {job.status} after {timeout:.0f} s "
                    f"({job.processed} of {job.total} rows): is a worker running?"
                )
            time.sleep(0.5)


def generate_csv(
    *, count: int, prefix: str, category_slugs: list[str], rng: random.Random
) -> bytes:
    """`count` plausible products as a CSV file with the import's columns."""
    lines = [",".join(COLUMNS)]
    for n in range(1, count + 1):
        words = rng.sample(WORDS, 3)
        name = " ".join(words).capitalize()
        price = f"{rng.randint(100, 99_999) / 100:.2f}"
        category = rng.choice(category_slugs) if category_slugs and rng.random() < 0.9 else ""
        tags = ";".join(rng.sample(WORDS, rng.randint(0, 3)))
        attributes = f'"{{""weight_g"": {rng.randint(10, 5000)}, ""color"": ""{words[0]}""}}"'
        lines.append(
            ",".join(
                [
                    f"{prefix}-{n:06d}",
                    f"{name} {n}",
                    f"{name}: a seeded product for load tests.",
                    price,
                    rng.choice(CURRENCIES),
                    str(rng.randint(0, 500)),
                    "true" if rng.random() < 0.95 else "false",
                    category,
                    tags,
                    attributes,
                ]
            )
        )
    return ("\n".join(lines) + "\n").encode()
