"""Bulk import of products: a CSV or JSON file, checked row by row, upserted by SKU in batches.

A file goes through three steps, one module each:

1. `import_file_read()` (files.py), in the request: the file as a whole. A type that is neither
   CSV nor JSON is a 415; a file that is not UTF-8, empty, without a header (CSV), not a JSON
   list, or without a single row is a 400 naming `file`. The rows are counted here, so the 202
   already shows the job's `total`.
2. `import_start()` (start.py): the job and its file (the `JobFile` table) are stored, and
   `catalog_import_task` is queued once they are committed.
3. `import_run()` (worker.py), in the worker: the rows in batches of CATALOG_IMPORT_BATCH_SIZE,
   each batch in one transaction:
   - every row is validated on its own, with the API's rules (ProductInputSerializer), and
     without a query;
   - then, for the whole batch at once: its category references resolved (one query), its
     SKUs that exist already looked up (one query), and, if it adds products, the plan's quota
     counted (kernel/quotas.py: the tenant's row locked, then a count);
   - the rows that pass are written by one `INSERT … ON CONFLICT (tenant_id, sku) DO UPDATE`
     (`bulk_create(update_conflicts=True)`), then one `UPDATE … SET version = version + 1` of
     the rows that conflict turned into updates;
   - `catalog_changed()` once, and the job's counts and errors in the same transaction.
   A batch that the database refuses as a whole (a row that passed the checks but breaks a
   constraint, say a category deleted meanwhile) is written again row by row, each in its own
   savepoint, so that only the bad rows are lost and none is half-written.

Decisions the specification left open (docs/catalog.md lists them for clients):

- A SKU that appears in more than one row of a file: the first row that can be imported wins;
  the later ones are errors naming it. Silently letting the last row win would hide mistakes.
- Fields a row does not give (a column the CSV header does not name, a key a JSON object does
  not have) keep their current value when the SKU exists, and take their default when it is
  created. A CSV cell left empty gives the field's default (no category, no tags, the tenant's
  currency …). `sku`, `name` and `price` are required in every row.
- `category` is a category id or slug of the tenant; an id is tried first.
- Every row that is imported is a write: its `version` goes up and `updated_at` moves even if
  nothing in it changed.
- A row that would add a product past the plan's `max_products` is an error of that row; rows
  updating existing products still go in.
"""

from catalog.imports.files import (
    COLUMNS,
    REQUIRED_COLUMNS,
    TAG_SEPARATOR,
    ImportFormat,
    ImportSource,
    import_file_read,
)
from catalog.imports.start import import_start
from catalog.imports.worker import ImportRowSerializer, catalog_import_task, import_run

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "TAG_SEPARATOR",
    "ImportFormat",
    "ImportRowSerializer",
    "ImportSource",
    "catalog_import_task",
    "import_file_read",
    "import_run",
    "import_start",
]
