"""Streamed response bodies of one tenant's rows (the catalog's CSV export, the audit log's
export): read after the view has returned, in constant memory.

A streamed body is produced after the request's transaction has committed and the request has
left its tenant. `TenantStream` runs each step of the chunks inside the tenant's scope again, so
that the scoped manager's filter and the row-level-security setting both apply, and nothing of the
scope is left on the thread between steps. The chunks read their rows from a server-side cursor
(`iterator(chunk_size=…)`) in a transaction of their own, which ends with the stream, or when the
client goes away (`close()`).

A failure is an error response only while no byte has been sent: `start()` produces the first
chunk before the response begins, so that the database failing there is a 503 problem like any
request's.
"""

import io
import uuid
from collections.abc import Iterator

from kernel.context import require_tenant_id, tenant_context

# Rows are written into a text buffer that is sent when it holds this much: a socket write per
# row would cost more than the rows.
FLUSH_CHARS = 64 * 1024


class TenantStream:
    """The body of a streamed response over the tenant in context's `chunks`: iterate it (the
    response does), after `start()` if the first chunk is to be read before the response
    begins; `close()` (the response's, when it is done or dropped) ends the stream's transaction
    whether or not it was read to the end."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = _in_tenant(require_tenant_id(), chunks)
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


def flushed(buffer: io.StringIO, *, at_least: int = FLUSH_CHARS) -> bytes | None:
    """The buffer's text (UTF-8), the buffer emptied, once it holds `at_least` characters."""
    if buffer.tell() < at_least:
        return None
    chunk = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return chunk


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
