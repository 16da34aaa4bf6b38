"""Running a bulk import job, in the worker (catalog/imports/__init__.py): its task, and the rows
in batches.
"""

import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import structlog
from celery import shared_task
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import F, Q
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from catalog import validators as v
from catalog.cache import catalog_changed
from catalog.imports.files import (
    COLUMNS,
    MAX_ERRORS,
    REQUIRED_COLUMNS,
    ROW_REFUSALS,
    TAG_SEPARATOR,
    ImportFormat,
    ImportSource,
    csv_header,
    csv_reader,
    decoded,
    json_items,
    restored,
)
from catalog.inputs import ProductInputSerializer, TextField
from catalog.models import Category, Product
from catalog.selectors import product_total
from catalog.services import default_currency, tenant_settings
from catalog.topics import CatalogTopic
from kernel import jobs
from kernel.context import require_tenant_id
from kernel.models import Job, JobFile
from kernel.problems import Problem, ProblemType, validation_errors
from kernel.quotas import Resource, enforce_quota

# --- running a job (in the worker) ---------------------------------------------------------------

log = structlog.get_logger(__name__)


def import_run(*, job_id: uuid.UUID) -> str | None:
    """Run the import job `job_id` of the tenant in context; returns its final status, or None
    when there was nothing to do (it had finished already)."""
    job = jobs.job_begin(job_id=job_id)
    if job is None:
        return None
    started = time.monotonic()
    try:
        stored = JobFile.objects.filter(job_id=job.pk).first()
        if stored is None:
            jobs.job_finish(
                job=job,
                status=Job.Status.FAILED,
                detail="The uploaded file is no longer there; upload it again.",
                topic=CatalogTopic.IMPORT_FINISHED,
            )
            return job.status
        source = ImportSource(
            name=stored.name,
            format=ImportFormat(stored.format),
            content=bytes(stored.content),
            total=job.total,
        )
        del stored
        _Importer(job, source).run()
    except Exception:
        log.exception("catalog_import_failed", job_id=str(job.pk))
        # The counts of the batch that failed were never committed: finish with those that were.
        job = Job.objects.get(pk=job.pk)
        jobs.job_finish(
            job=job,
            status=Job.Status.FAILED,
            detail=(
                f"The import stopped unexpectedly after {job.processed} of {job.total} rows. "
                "The rows counted as succeeded were written; import the file again to finish."
            ),
            topic=CatalogTopic.IMPORT_FINISHED,
        )
        return job.status
    jobs.job_finish(job=job, status=Job.Status.SUCCEEDED, topic=CatalogTopic.IMPORT_FINISHED)
    log.info(
        "catalog_import_finished",
        job_id=str(job.pk),
        total=job.total,
        succeeded=job.succeeded,
        failed=job.failed,
        seconds=round(time.monotonic() - started, 2),
    )
    return job.status


class ImportRowSerializer(ProductInputSerializer):
    """A product as an import row: the API's rules for every field, except that `category` is a
    reference (an id or a slug) resolved for the whole batch at once, not a query per row, and
    that `is_active` is also read from text (a CSV cell is text: `true`, `false`, `1`, `0`...),
    where the API takes a JSON boolean only."""

    is_active = serializers.BooleanField(required=False, default=True)
    category = TextField(
        max_length=max(v.CATEGORY_SLUG_MAX_LENGTH, 36),
        allow_null=True,
        required=False,
        default=None,
    )


@dataclass(slots=True)
class _RawRow:
    """A row as read from the file: its values (still text, from a CSV) and the fields it gives."""

    number: int  # 1-based, counting data rows only (not a CSV header, nor blank lines)
    data: dict[str, Any] | None  # None: not even readable as a row (its errors say why)
    given: frozenset[str]
    errors: list[tuple[str | None, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Row:
    """A row whose fields passed validation."""

    number: int
    values: dict[str, Any]
    given: frozenset[str]
    category_ref: str | None
    category_id: uuid.UUID | None = None

    @property
    def sku(self) -> str:
        return self.values["sku"]


def _read_rows(source: ImportSource) -> Iterator[_RawRow]:
    text = decoded(source.content)
    if source.format is ImportFormat.CSV:
        return _csv_rows(text)
    return _json_rows(json_items(text))


def _csv_rows(text: str) -> Iterator[_RawRow]:
    reader = csv_reader(text)
    columns = csv_header(reader)
    given = frozenset(name for name in columns if name is not None)
    number = 0
    for record in reader:
        if not record:
            continue
        number += 1
        if len(record) != len(columns):
            message = f"The row has {len(record)} values; the header has {len(columns)} columns."
            yield _RawRow(number, None, given, [(None, message)])
            continue
        yield _csv_row(number, columns, record, given)


def _csv_row(
    number: int, columns: list[str | None], record: list[str], given: frozenset[str]
) -> _RawRow:
    data: dict[str, Any] = {}
    errors: list[tuple[str | None, str]] = []
    for name, raw_cell in zip(columns, record, strict=True):
        cell = restored(raw_cell)
        if name is None or (cell == "" and name not in REQUIRED_COLUMNS):
            continue  # an ignored column, or an empty cell: the field's default
        if name == "tags":
            data[name] = [tag.strip() for tag in cell.split(TAG_SEPARATOR) if tag.strip()]
        elif name == "attributes":
            try:
                data[name] = json.loads(cell)
            except (ValueError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                errors.append((name, f"Not valid JSON: {reason}."))
        else:
            data[name] = cell
    return _RawRow(number, data, given, errors)


def _json_rows(items: list[Any]) -> Iterator[_RawRow]:
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            yield _RawRow(
                number, None, frozenset(), [(None, "Each item must be a product object.")]
            )
            continue
        # Like the API, keys that are not writable fields are ignored.
        data = {name: value for name, value in item.items() if name in COLUMNS}
        yield _RawRow(number, data, frozenset(data))


class _Importer:
    def __init__(self, job: Job, source: ImportSource) -> None:
        self.job = job
        self.source = source
        self.tenant_id = require_tenant_id()
        self.currency = default_currency(tenant_settings())
        # One instance for every row: a serializer's fields are built once, not per row.
        self.serializer = ImportRowSerializer()
        # SKU → the row that imported it, for the rule "one row per SKU in a file".
        self.imported: dict[str, int] = {}
        self.batch_errors: list[tuple[int, str | None, str]] = []

    def run(self) -> None:
        rows = _read_rows(self.source)
        while batch := list(islice(rows, settings.CATALOG_IMPORT_BATCH_SIZE)):
            self._import_batch(batch)

    def _import_batch(self, batch: list[_RawRow]) -> None:
        candidates = [row for row in map(self._validated, batch) if row is not None]
        with transaction.atomic():
            accepted = self._admitted(candidates)
            written = self._write(accepted)
            if written:
                catalog_changed()
            self.job.processed += len(batch)
            self.job.succeeded += written
            self._record_errors()
            jobs.job_progress(job=self.job)

    # --- checks ---

    def _validated(self, raw: _RawRow) -> _Row | None:
        if raw.data is None:
            self._refuse(raw.number, raw.errors)
            return None
        try:
            values = self.serializer.run_validation(raw.data)
        except ValidationError as exc:
            problems = raw.errors + [
                (error["field"], error["message"]) for error in validation_errors(exc.detail)
            ]
            self._refuse(raw.number, problems)
            return None
        if raw.errors:
            self._refuse(raw.number, raw.errors)
            return None
        values = dict(values)
        return _Row(raw.number, values, raw.given, category_ref=values.pop("category"))

    def _admitted(self, rows: list[_Row]) -> list[_Row]:
        """The rows of a batch that can be written: their category exists, their SKU is not
        imported by an earlier row, and a new product fits in the plan."""
        if not rows:
            return []
        categories = _categories_by_ref({row.category_ref for row in rows if row.category_ref})
        existing = set(
            Product.objects.filter(sku__in=[row.sku for row in rows]).values_list("sku", flat=True)
        )
        room: int | None = None
        limit = 0
        accepted = []
        for row in rows:
            if row.category_ref is not None:
                row.category_id = categories.get(row.category_ref)
                if row.category_id is None:
                    message = f'Category "{row.category_ref}" does not exist.'
                    self._refuse(row.number, [("category", message)])
                    continue
            if row.sku in self.imported:
                message = (
                    f'SKU "{row.sku}" is already imported from row {self.imported[row.sku]} of '
                    "this file: a SKU may appear only once in a file."
                )
                self._refuse(row.number, [("sku", message)])
                continue
            if row.sku not in existing:
                if room is None:  # counted once a batch, and only if it adds products
                    room, limit = self._room_for_products()
                if room <= 0:
                    message = (
                        f"The plan allows {limit} products: importing this row would add one more."
                    )
                    self._refuse(row.number, [(None, message)])
                    continue
                room -= 1
            self.imported[row.sku] = row.number
            accepted.append(row)
        return accepted

    def _room_for_products(self) -> tuple[int, int]:
        """How many more products the plan allows, and its limit. The tenant's row stays locked
        until the batch commits, so that API creates meanwhile queue behind it."""
        counted: list[int] = []

        def count() -> int:
            counted.append(product_total())
            return counted[0]

        try:
            room = enforce_quota(
                tenant=self.tenant_id, resource=Resource.PRODUCTS, count=count, adding=0
            )
        except Problem as exc:  # already past it (a plan changed since)
            if exc.problem_type is not ProblemType.QUOTA_EXCEEDED:
                raise
            return 0, exc.extra["limit"]
        return room, counted[0] + room

    # --- writes ---

    def _write(self, rows: list[_Row]) -> int:
        """Upsert the rows; returns how many were written."""
        groups: dict[frozenset[str], list[_Row]] = defaultdict(list)
        for row in rows:  # one statement per set of fields given: usually one for the file
            groups[row.given].append(row)
        written = 0
        for given, group in groups.items():
            try:
                with transaction.atomic():
                    self._upsert(group, given)
                written += len(group)
            except ROW_REFUSALS as exc:
                log.warning(
                    "catalog_import_batch_refused",
                    job_id=str(self.job.pk),
                    error=type(exc).__name__,
                    rows=len(group),
                )
                written += self._write_one_by_one(group, given)
        return written

    def _write_one_by_one(self, rows: list[_Row], given: frozenset[str]) -> int:
        written = 0
        for row in rows:
            try:
                with transaction.atomic():
                    self._upsert([row], given)
            except ROW_REFUSALS as exc:
                del self.imported[row.sku]
                self._refuse(row.number, [(None, _database_refusal(exc))])
            else:
                written += 1
        return written

    def _upsert(self, rows: list[_Row], given: frozenset[str]) -> None:
        products = [self._product(row) for row in rows]
        # On a conflict only the fields the file gives change (and updated_at); a new product
        # takes every value, defaults included.
        update_fields = [*sorted(given - {"sku"}), "updated_at"]
        Product.objects.bulk_create(
            products,
            update_conflicts=True,
            unique_fields=["tenant", "sku"],
            update_fields=update_fields,
        )
        # A product that existed kept its id (the conflict updated it rather than inserting the
        # new one): those are the updates, whose version goes up as any write's does. The upsert
        # holds every row it touched locked until commit, so no write can come in between.
        Product.objects.filter(sku__in=[product.sku for product in products]).exclude(
            pk__in=[product.pk for product in products]
        ).update(version=F("version") + 1)

    def _product(self, row: _Row) -> Product:
        values = dict(row.values)
        currency = values.pop("currency", None) or self.currency
        return Product(
            tenant_id=self.tenant_id, category_id=row.category_id, currency=currency, **values
        )

    # --- errors ---

    def _refuse(self, number: int, problems: list[tuple[str | None, str]]) -> None:
        self.job.failed += 1
        # dict.fromkeys: two validators may say the same thing (DRF's and ours on NUL).
        self.batch_errors.extend((number, *problem) for problem in dict.fromkeys(problems))

    def _record_errors(self) -> None:
        # In row order, whichever check refused each row.
        self.batch_errors.sort(key=lambda error: error[0])
        for number, name, message in self.batch_errors:
            if len(self.job.errors) >= MAX_ERRORS:
                self.job.errors_omitted += 1
                continue
            entry: dict[str, Any] = {"row": number}
            if name is not None:
                entry["field"] = name
            entry["message"] = message
            self.job.errors.append(entry)
        self.batch_errors = []


def _categories_by_ref(refs: set[str]) -> dict[str, uuid.UUID]:
    """Category references (ids or slugs) of the tenant's categories → their ids; one query."""
    if not refs:
        return {}
    ids: dict[str, uuid.UUID] = {}
    for ref in refs:
        with contextlib.suppress(ValueError):  # not an id: a slug
            ids[ref] = uuid.UUID(ref)
    found = Category.objects.filter(Q(pk__in=set(ids.values())) | Q(slug__in=refs)).values_list(
        "id", "slug"
    )
    by_id: dict[uuid.UUID, uuid.UUID] = {}
    by_slug: dict[str, uuid.UUID] = {}
    for category_id, slug in found:
        by_id[category_id] = category_id
        by_slug[slug] = category_id
    resolved = {}
    for ref in refs:
        category_id = by_id.get(ids[ref]) if ref in ids else None
        category_id = category_id or by_slug.get(ref)
        if category_id is not None:
            resolved[ref] = category_id
    return resolved


def _database_refusal(exc: IntegrityError | DataError) -> str:
    # The constraint's name helps; the database's own message may quote values and SQL.
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
    if constraint:
        return f"The database refused the row (constraint {constraint})."
    return "The database refused the row."


# The name queued messages carry: as it was when the task lived in catalog/tasks.py.
@shared_task(name="catalog.tasks.catalog_import_task")
def catalog_import_task(job_id: str) -> str | None:
    """Run a bulk import job in the tenant it was queued under."""
    return import_run(job_id=uuid.UUID(job_id))
