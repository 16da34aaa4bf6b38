"""The export of a tenant's products as CSV, streamed: the columns of the import, so that an
export imports back unchanged. A cell a spreadsheet would run as a formula is exported inert
(catalog/imports/files.py, `neutralized`).

A streamed body is produced after the view has returned, so after the request's transaction
(kernel/api/base.py) has committed and the request has left its tenant: the rows are read when
the server pulls the chunks. Two things make that safe:

- Each step of the stream runs inside the tenant's scope again (`_in_tenant`), so the tenant
  filter of the scoped manager and the row-level-security setting both apply, and nothing of
  the scope is left on the thread between steps.
- The rows come from a server-side cursor (`iterator(chunk_size=…)`), which only lives inside a
  transaction: the stream opens its own, which starts with the tenant's row-level-security
  setting (tenants/dbbackend). A database without the setting would show no rows, not another
  tenant's. The transaction ends with the stream, or when the client goes away.

Memory stays flat whatever the catalog's size: one chunk of rows and one buffer of CSV text.

A failure is an error response only while no byte has been sent: `ProductCSVExport.start()`
produces the first chunk (the transaction begun, the cursor declared, the first rows fetched)
before the response starts, after the request's transaction (see `ProductExportView.dispatch`),
so that the database failing there is a 503 problem like any request's. Once the status line is
out, a failure cannot change it: the stream raises, and gunicorn, which serves the API, shuts
the socket of a response it has begun, so that the client sees a transfer that never ended
(chunked encoding without its last chunk), never a short file that looks complete.
"""

import csv
import io
import json
import uuid
from collections.abc import Iterator

from django.db import transaction

from catalog import selectors
from catalog.imports import COLUMNS, TAG_SEPARATOR
from catalog.imports.files import neutralized
from catalog.selectors import ProductFilters
from kernel.context import require_tenant_id, tenant_context

# The database columns read for each CSV column, in the same order.
_FIELDS = tuple("category_id" if name == "category" else name for name in COLUMNS)
# Rows are written into a buffer that is sent when it holds this much text: a socket write per
# row would cost more than the rows.
FLUSH_CHARS = 64 * 1024


class ProductCSVExport:
    """The body of a streamed response: iterate it (the response does), after `start()` if the
    first chunk is to be read before the response begins; `close()` (the response's, when it is
    done or dropped) ends the stream's transaction whether or not it was iterated."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._first: bytes | None = None
        self._started = False

    def start(self) -> None:
        """Produce the first chunk now: an error of the database's first answer raises here."""
        if not self._started:
            self._started = True
            self._first = next(self._chunks, None)

    def __iter__(self) -> Iterator[bytes]:
        self.start()
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._chunks

    def close(self) -> None:
        self._chunks.close()


def product_csv_stream(
    *, filters: ProductFilters, ordering: str, chunk_size: int
) -> ProductCSVExport:
    """The tenant in context's products as CSV (UTF-8, header first), for a streamed response."""
    return ProductCSVExport(
        _in_tenant(require_tenant_id(), _csv_chunks(filters, ordering, chunk_size))
    )


def _in_tenant(tenant_id: uuid.UUID, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        while True:
            with tenant_context(tenant_id):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk
    finally:
        # The client went away mid-stream: end the transaction now, in the same scope.
        with tenant_context(tenant_id):
            chunks.close()


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
            if buffer.tell() >= FLUSH_CHARS:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


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
