"""The catalog's exports: its products as CSV, streamed, and its resources in the tenant's
archive (kernel/exports/: `product_rows`, `category_rows`, NDJSON as the API shows them).

The CSV export: the columns of the import, so that an
export imports back unchanged. A cell a spreadsheet would run as a formula is exported inert
(catalog/imports/files.py, `neutralized`).

Streamed (kernel/streaming.py): each step in the tenant's scope again, the rows from a
server-side cursor in a transaction of the stream's own, so that memory stays flat whatever the
catalog's size. A failure is an error response only while no byte has been sent: the view's
dispatch calls `start()` after the request's transaction, so that the database failing there is
a 503 problem like any request's. Once the status line is out, a failure cannot change it: the
stream raises, and gunicorn, which serves the API, shuts the socket of a response it has begun,
so that the client sees a transfer that never ended (chunked encoding without its last chunk),
never a short file that looks complete.
"""

import csv
import io
import json
from collections.abc import Iterator

from django.db import transaction

from catalog import selectors
from catalog.imports import COLUMNS, TAG_SEPARATOR
from catalog.imports.files import neutralized
from catalog.models import PRODUCT_WRITABLE_FIELDS, Category, Product
from catalog.selectors import ProductFilters
from kernel.streaming import TenantStream, flushed

# The database columns read for each CSV column, in the same order.
_FIELDS = tuple("category_id" if name == "category" else name for name in COLUMNS)


def product_csv_stream(*, filters: ProductFilters, ordering: str, chunk_size: int) -> TenantStream:
    """The tenant in context's products as CSV (UTF-8, header first), for a streamed response."""
    return TenantStream(_csv_chunks(filters, ordering, chunk_size))


def _csv_chunks(filters: ProductFilters, ordering: str, chunk_size: int) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    with transaction.atomic():
        rows = (
            selectors.product_list(filters=filters, ordering=ordering)
            .values_list(*_FIELDS)
            .iterator(chunk_size=chunk_size)
        )
        for row in rows:
            writer.writerow(_cells(row))
            if (chunk := flushed(buffer)) is not None:
                yield chunk
    if (chunk := flushed(buffer, at_least=1)) is not None:
        yield chunk


def _cells(row: tuple) -> list[str]:
    sku, name, description, price, currency, stock, is_active, category_id, tags, attributes = row
    cells = [
        sku,
        name,
        description,
        str(price),
        currency,
        str(stock),
        "true" if is_active else "false",
        str(category_id) if category_id else "",
        TAG_SEPARATOR.join(tags or []),
        json.dumps(attributes, ensure_ascii=False, separators=(",", ":")) if attributes else "",
    ]
    return [neutralized(cell) for cell in cells]


# --- the tenant's archive (kernel/exports/) ----------------------------------------------------

_PRODUCT_FIELDS = (
    "id",
    *("category_id" if name == "category" else name for name in PRODUCT_WRITABLE_FIELDS),
    "version",
    "created_at",
    "updated_at",
)


def product_rows() -> Iterator[dict]:
    """The tenant in context's products as the API shows them (`category` an id), by SKU."""
    rows = Product.objects.order_by("sku").values(*_PRODUCT_FIELDS).iterator(chunk_size=2000)
    for row in rows:
        row["category"] = row.pop("category_id")
        yield row


def category_rows() -> Iterator[dict]:
    fields = ("id", "name", "slug", "parent_id", "created_at", "updated_at")
    for row in Category.objects.order_by("slug").values(*fields).iterator(chunk_size=2000):
        row["parent"] = row.pop("parent_id")
        yield row
