"""The file of a bulk import as a whole, read in the request (catalog/imports/__init__.py)."""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from django.db import DataError, IntegrityError

from catalog.models import PRODUCT_WRITABLE_FIELDS
from kernel.problems import InvalidInput, Problem, ProblemType

log = structlog.get_logger(__name__)


# The columns of a CSV import (and of the export): the writable fields of a product.
COLUMNS = PRODUCT_WRITABLE_FIELDS
REQUIRED_COLUMNS = frozenset({"sku", "name", "price"})
# Read-only fields of a product, as a copy of API responses may carry them: ignored, as the API
# ignores them in a body. Any other unknown column is a 400: a misspelt header would otherwise
# drop that column from every row without a word.
IGNORED_COLUMNS = frozenset({"id", "version", "created_at", "updated_at", "related"})
TAG_SEPARATOR = ";"
# Error entries kept on a job; the count of the others is in `errors_omitted`.
MAX_ERRORS = 1_000
# What the database says about a row it will not store (a constraint, a value it cannot hold).
# Anything else (the connection lost, say) is no fault of the rows: the job fails.
ROW_REFUSALS = (IntegrityError, DataError)
# A spreadsheet reads a cell that starts with one of these as a formula, which can run code or
# send data away (`=HYPERLINK(…)`, DDE) when an admin opens an export. Such a cell is exported
# behind a `'`, which spreadsheets read as "text", and the import takes the `'` off again, so an
# export imports back unchanged. A cell that already looks like an escaped one (`'=…`, `''…`)
# gets one more `'`, for the same round trip.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_MARK = "'"


def neutralized(cell: str) -> str:
    """The cell as exported: inert in a spreadsheet."""
    if cell.startswith(FORMULA_STARTS) or restored(cell) != cell:
        return _TEXT_MARK + cell
    return cell


def restored(cell: str) -> str:
    """The cell as an export wrote it, back to its value: `neutralized`'s inverse."""
    if cell.startswith(_TEXT_MARK) and cell[1:].startswith((*FORMULA_STARTS, _TEXT_MARK)):
        return cell[1:]
    return cell


class ImportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


# What a file is, from its part's Content-Type when that says it, else from its name.
# (Browsers on Windows send a CSV as application/vnd.ms-excel, curl often as octet-stream.)
_CONTENT_TYPES = {
    "text/csv": ImportFormat.CSV,
    "application/csv": ImportFormat.CSV,
    "application/json": ImportFormat.JSON,
}
_EXTENSIONS = {".csv": ImportFormat.CSV, ".json": ImportFormat.JSON}


@dataclass(frozen=True, slots=True)
class ImportSource:
    """An uploaded file that passed the checks of the whole file."""

    name: str
    format: ImportFormat
    content: bytes
    total: int


# --- the file as a whole (in the request) -------------------------------------------------------


def import_file_read(*, name: str, content_type: str | None, content: bytes) -> ImportSource:
    """Check the file as a whole and count its rows: 415 or 400 problems when it cannot be one."""
    file_format = _format_of(name, content_type)
    text = decoded(content)
    if not text.strip():
        raise _file_error("The file is empty.")
    total = _count_csv_rows(text) if file_format is ImportFormat.CSV else len(json_items(text))
    if total == 0:
        raise _file_error("The file holds no products.")
    return ImportSource(name=name or "", format=file_format, content=content, total=total)


def _format_of(name: str, content_type: str | None) -> ImportFormat:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in _CONTENT_TYPES:
        return _CONTENT_TYPES[media_type]
    extension = ("." + name.rsplit(".", 1)[-1].lower()) if "." in (name or "") else ""
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    raise Problem(
        ProblemType.UNSUPPORTED_MEDIA_TYPE,
        detail="Import a CSV file (text/csv, .csv) or a JSON file (application/json, .json).",
    )


def decoded(content: bytes) -> str:
    try:
        # utf-8-sig: a byte order mark, which spreadsheets like to write, is dropped.
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(
            f"The file is not UTF-8 text (byte {exc.start + 1} is not valid UTF-8)."
        ) from exc


def _file_error(message: str) -> InvalidInput:
    return InvalidInput({"file": [message]})


def csv_reader(text: str) -> Iterator[list[str]]:
    # The csv module refuses fields over 128 KiB by default, which would fail the whole file for
    # one overlong description: let any field through, and let the row's checks refuse it.
    # (The limit is process-wide; raising it only lets other readers accept longer fields.)
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    return csv.reader(io.StringIO(text))


def csv_header(reader: Iterator[list[str]]) -> list[str | None]:
    """The column of each position of a row: a field name, or None for a column ignored."""
    try:
        header = next(reader)
    except StopIteration:
        raise _file_error("The file is empty.") from None
    except csv.Error as exc:
        raise _file_error(f"The CSV cannot be read: {exc}.") from exc
    names = [cell.strip().lower() for cell in header]
    known = [name for name in names if name in COLUMNS]
    unknown = [name for name in names if name and name not in COLUMNS + tuple(IGNORED_COLUMNS)]
    if not known:
        raise _file_error(
            "The first line must be a header naming the columns: "
            f"{', '.join(COLUMNS)} (sku, name and price are required)."
        )
    if unknown:
        raise _file_error(
            f"Unknown column(s): {', '.join(unknown)}. The columns are: {', '.join(COLUMNS)}."
        )
    twice = sorted({name for name in known if known.count(name) > 1})
    if twice:
        raise _file_error(f"Column(s) named more than once: {', '.join(twice)}.")
    missing = [name for name in COLUMNS if name in REQUIRED_COLUMNS and name not in known]
    if missing:
        raise _file_error(f"The header lacks the required column(s): {', '.join(missing)}.")
    # Unnamed columns (a trailing comma) and read-only fields are ignored.
    return [name if name in COLUMNS else None for name in names]


def _count_csv_rows(text: str) -> int:
    reader = csv_reader(text)
    csv_header(reader)
    try:
        return sum(1 for record in reader if record)  # blank lines are no rows
    except csv.Error as exc:
        raise _file_error(f"The CSV cannot be read (line {reader.line_num}): {exc}.") from exc


def json_items(text: str) -> list[Any]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _file_error(
            f"The file is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc
    except RecursionError as exc:
        raise _file_error("The file is not valid JSON: it nests too deeply.") from exc
    if not isinstance(items, list):
        raise _file_error("A JSON import is a list of product objects: [{...}, {...}].")
    return items
