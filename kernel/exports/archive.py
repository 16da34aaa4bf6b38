"""The archive of an export: a gzip-compressed tar of one NDJSON file per resource and a
`manifest.json` (first), written in constant memory.

A tar member's size comes before its bytes, and a resource's size is known only once its rows
have all been read: each resource is first spooled to a temporary file on disk (its rows one at
a time, from a server-side cursor), then copied into the archive, which is itself written to a
temporary file while its SHA-256 is computed. Memory holds a row and the copy's buffer, whatever
the data's size; the disk holds the data about twice over (uncompressed and compressed) until
the archive is stored.

Each line is a JSON object: UTF-8, not ASCII-escaped; ids as strings, amounts as strings (as the
API writes them), dates and times as RFC 3339 in UTC (`2026-12-07T17:02:58.123456Z`).
"""

import datetime
import decimal
import hashlib
import io
import json
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from kernel.exports.registry import Row

MANIFEST = "manifest.json"
FORMAT = "tenantapi-export"
FORMAT_VERSION = 1


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date | uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not exported")


def ndjson_line(row: Row) -> bytes:
    return (
        json.dumps(row, default=_plain, ensure_ascii=False, separators=(",", ":")) + "\n"
    ).encode("utf-8")


class _HashingWriter(io.RawIOBase):
    """Writes through to `target`, hashing and counting what passes."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._target.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


@dataclass
class _Part:
    file: IO[bytes]
    rows: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


@dataclass
class Archive:
    """The finished archive: `file` (at its start), its size and SHA-256 (hex), the manifest."""

    file: IO[bytes]
    size: int
    sha256: str
    manifest: dict[str, Any]


class ArchiveWriter:
    """`add()` the rows of each resource (again for more rows of the same resource), then
    `finish()` with the manifest's own fields; `close()` drops the temporary files."""

    def __init__(self) -> None:
        self._parts: dict[str, _Part] = {}
        self._out: IO[bytes] | None = None

    def add(self, name: str, rows: Iterable[Row], **extra: Any) -> int:
        """Append `rows` (each with `extra`'s keys added) to `<name>.ndjson`; the rows added."""
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = _Part(tempfile.TemporaryFile())  # noqa: SIM115
        added = 0
        for row in rows:
            line = ndjson_line({**extra, **row} if extra else row)
            part.file.write(line)
            part.sha256.update(line)
            added += 1
        part.rows += added
        return added

    def finish(self, manifest: Mapping[str, Any]) -> Archive:
        now = datetime.datetime.now(datetime.UTC)
        files = {
            f"{name}.ndjson": {"rows": part.rows, "sha256": part.sha256.hexdigest()}
            for name, part in sorted(self._parts.items())
        }
        full_manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **manifest,
            "exported_at": _plain(now),
            "files": files,
        }
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        hashing = _HashingWriter(self._out)
        with tarfile.open(fileobj=hashing, mode="w:gz", compresslevel=6) as tar:
            body = json.dumps(full_manifest, ensure_ascii=False, indent=2).encode("utf-8")
            tar.addfile(_member(MANIFEST, len(body), now), io.BytesIO(body))
            for name, part in sorted(self._parts.items()):
                size = part.file.tell()
                part.file.seek(0)
                tar.addfile(_member(f"{name}.ndjson", size, now), part.file)
                part.file.close()
        self._parts.clear()
        self._out.seek(0)
        return Archive(self._out, hashing.size, hashing.sha256.hexdigest(), full_manifest)

    def close(self) -> None:
        for part in self._parts.values():
            part.file.close()
        self._parts.clear()
        if self._out is not None:
            self._out.close()


def _member(name: str, size: int, when: datetime.datetime) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(when.timestamp())
    info.mode = 0o644
    return info
