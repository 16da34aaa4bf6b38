"""The tenants' audit logs as hash chains: each event proves every event before it.

Each event of a tenant carries `hash` = SHA-256 (hex) of its canonical JSON followed by the
previous event's `hash`, which it also carries as `prev_hash` (64 zeros for the tenant's first
event). Altering, inserting or removing an event changes a hash that every later event depends
on, so whoever holds a copy of the log (the tenant, through the export) can tell.

**Canonical JSON** (`canonical()`): the object of the event's fields in `CANONICAL_FIELDS`, keys
sorted, no whitespace (`,` and `:` as separators), UTF-8 and not ASCII-escaped, as Python's
`json.dumps(…, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes it. Ids are
lower-case hyphenated UUID strings, `created_at` is RFC 3339 UTC with microseconds
(`2026-12-07T17:02:58.123456Z`), absent values are `null`. docs/audit.md has a 20-line script
that checks an export with nothing but this definition.

**One chain per tenant, never forked.** `append()` runs in the transaction of the event and
first locks the tenant's chain head row (`AuditChainHead`, `SELECT … FOR UPDATE`): a second
writer of the same tenant waits there until the first commits, then reads the new head. A row
rather than `pg_advisory_xact_lock(hashtext(tenant_id))`: the row holds what the next event
needs (the head's hash and time: one indexed read instead of looking for the newest event), it
keeps the pruning anchor, it lets verification notice events missing at the end of the chain,
and it works unchanged on SQLite, the embedded default (where `FOR UPDATE` is a no-op and
writes are serialised by the database anyway). It is tenant-owned, under row-level security
like every such table. Writers of different tenants never wait for each other.

**Chain order is time order.** Under the lock, an event's `created_at` is moved, if need be, to
just after the head's (by a microsecond): the order in which events join the chain (commit
order) is then also `(created_at, id)`, the order verification and the export walk in, whatever
the clocks of the writers.

**Streamed as it is written.** While some webhook endpoint of the tenant takes the topic
`audit.event` (`set_streamed()`, called by the webhooks app under the same lock), `append()`
also publishes every event as a domain event of that topic, in the event's transaction (the
outbox: sent once it commits, never lost), its data exactly the event's export line
(`export_line()`). A receiver can therefore check the chain from the deliveries alone. Whether
to publish is a column of the head row that `append()` reads anyway: a tenant that streams
nothing pays no query for it. docs/audit.md, "Streaming to a SIEM".
"""

import csv
import datetime
import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from prometheus_client import Counter

from kernel.context import require_tenant_id, tenant_context
from kernel.events import publish
from kernel.streaming import TenantStream, flushed
from kernel.tenancy.models import AuditChainHead, AuditEvent

log = structlog.get_logger(__name__)

GENESIS = "0" * 64
# What an event's hash covers: every field the event has, but its hashes.
CANONICAL_FIELDS = (
    "action",
    "actor_app_id",
    "actor_app_label",
    "actor_id",
    "actor_label",
    "actor_type",
    "changes",
    "created_at",
    "id",
    "ip",
    "request_id",
    "target_id",
    "target_type",
    "tenant_id",
    "user_agent",
)
# Verification and the export read this many events per round trip (a server-side cursor on
# PostgreSQL): memory holds one chunk, whatever the log's length.
CHUNK_SIZE = 2000
_ROW_FIELDS = (*CANONICAL_FIELDS, "prev_hash", "hash")
# The verification job walks each chain whole at least this often (verify_recent).
FULL_WALK_SECONDS = 24 * 60 * 60
_TICK = datetime.timedelta(microseconds=1)


class AuditTopic(StrEnum):
    """The domain event every appended event of a streamed tenant is published as (registered
    from KernelConfig.ready(), readable with `audit.read`, never a notification)."""

    EVENT = "audit.event"


BREAKS = Counter(
    "audit_chain_breaks",
    "Breaks found in tenants' audit hash chains by the verification job.",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


# --- the hash ----------------------------------------------------------------------------------


def format_time(value: datetime.datetime) -> str:
    """RFC 3339, UTC, always with microseconds: one spelling per instant."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plain_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "created_at":
        return format_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if name == "ip":
        return str(value)
    return value


def event_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical fields of an event (a mapping of field names, `tenant_id` included), as
    JSON values."""
    return {name: plain_value(name, row[name]) for name in CANONICAL_FIELDS}


def canonical(values: Mapping[str, Any]) -> bytes:
    return json.dumps(
        values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def event_hash(values: Mapping[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical(values) + prev_hash.encode("ascii")).hexdigest()


def export_line(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the export writes it, and as `audit.event` carries it: its canonical fields
    and its two hashes."""
    return {**event_values(row), "prev_hash": row["prev_hash"], "hash": row["hash"]}


# --- appending ---------------------------------------------------------------------------------


def locked_head(tenant_id: uuid.UUID) -> AuditChainHead:
    """The tenant's chain head, locked until the transaction ends (made on first use)."""
    heads = AuditChainHead.objects.select_for_update().filter(tenant_id=tenant_id)
    head = heads.first()
    if head is None:
        # ON CONFLICT DO NOTHING: a writer that raced us to the first event made it; the lock
        # below then waits for that writer's commit.
        AuditChainHead.objects.bulk_create(
            [AuditChainHead(tenant_id=tenant_id, hash=GENESIS, anchor_hash=GENESIS)],
            ignore_conflicts=True,
        )
        head = heads.get()
    return head


def append(event: AuditEvent) -> AuditEvent:
    """Chain `event` to its tenant's log and save it, in the caller's transaction and scope."""
    head = locked_head(event.tenant_id)
    if head.event_created_at is not None and event.created_at <= head.event_created_at:
        event.created_at = head.event_created_at + _TICK
    event.prev_hash = head.hash
    event.hash = event_hash(event_values(_fields_of(event)), head.hash)
    event.save()
    head.hash, head.event_id, head.event_created_at = event.hash, event.pk, event.created_at
    head.save(update_fields=["hash", "event_id", "event_created_at", "updated_at"])
    if head.streamed:
        _publish(event)
    return event


def _fields_of(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in CANONICAL_FIELDS}


def _publish(event: AuditEvent) -> None:
    # The values the hash was computed from, as they are in memory: the very bytes the export
    # reads back. No actor: the event names its own, and publishing records nothing in the log.
    line = export_line({**_fields_of(event), "prev_hash": event.prev_hash, "hash": event.hash})
    publish(topic=AuditTopic.EVENT, data=line, tenant_id=event.tenant_id)


def set_streamed(*, tenant_id: uuid.UUID, wanted: Callable[[], bool]) -> bool:
    """Turn the tenant's stream on or off, as `wanted()` says, and return what it says.

    `wanted()` is asked once the chain head is locked: two writers of subscriptions (webhook
    endpoints) take turns, and each decides on what the one before committed. Appenders wait on
    the same lock, so an event appended after the change commits sees it. In the caller's
    transaction and scope.
    """
    head = locked_head(tenant_id)
    streamed = bool(wanted())
    if head.streamed != streamed:
        head.streamed = streamed
        head.save(update_fields=["streamed", "updated_at"])
    return streamed


# --- verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainPoint:
    """An event of the chain, as much of it as a walk needs to start after it."""

    event_id: uuid.UUID
    created_at: datetime.datetime
    hash: str

    def as_cache(self) -> dict[str, str]:
        return {
            "event_id": str(self.event_id),
            "created_at": self.created_at.isoformat(),
            "hash": self.hash,
        }

    @classmethod
    def from_cache(cls, value: Mapping[str, str] | None) -> "ChainPoint | None":
        if not value:
            return None
        return cls(
            event_id=uuid.UUID(value["event_id"]),
            created_at=datetime.datetime.fromisoformat(value["created_at"]),
            hash=value["hash"],
        )

    def key(self) -> tuple[datetime.datetime, uuid.UUID]:
        return (self.created_at, self.event_id)


@dataclass(frozen=True, slots=True)
class Verification:
    valid: bool
    events: int
    head: str
    broken_at: uuid.UUID | None = None
    # prev_hash (the link to the event before is wrong: one was removed or inserted), hash
    # (the event is not what was written), head (events are missing at the end of the chain).
    reason: str = ""
    last: ChainPoint | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.valid:
            return {"valid": True, "events": self.events, "head": self.head}
        return {
            "valid": False,
            "events": self.events,
            "broken_at": str(self.broken_at) if self.broken_at else None,
            "reason": self.reason,
        }


def anchor_of(head: AuditChainHead | None) -> ChainPoint | None:
    if head is None or head.anchor_event_id is None:
        return None
    return ChainPoint(head.anchor_event_id, head.anchor_created_at, head.anchor_hash)


def chain_events(tenant_id: uuid.UUID, *, after: ChainPoint | None = None) -> QuerySet[AuditEvent]:
    """The tenant's events in chain order, those after `after` only if given."""
    events = AuditEvent.objects.filter(tenant_id=tenant_id)
    if after is not None:
        events = events.filter(
            Q(created_at__gt=after.created_at)
            | Q(created_at=after.created_at, id__gt=after.event_id)
        )
    return events.order_by("created_at", "id")


def verify(
    *, tenant_id: uuid.UUID, start: ChainPoint | None = None, chunk_size: int = CHUNK_SIZE
) -> Verification:
    """Walk the tenant's chain from its anchor (or from `start`, if later) to its head.

    Constant memory: the events come `chunk_size` at a time, only the columns the hash needs.
    Call it in the tenant's scope (or the operator's).
    """
    with transaction.atomic():
        head = AuditChainHead.objects.filter(tenant_id=tenant_id).first()
        point = anchor_of(head)
        if start is not None and (point is None or start.key() > point.key()):
            point = start
        events = chain_events(tenant_id, after=point)
        if head is not None and head.event_created_at is not None:
            # Events appended after the head was read are for the next walk (they are later).
            events = events.filter(created_at__lte=head.event_created_at)
        rows = events.values_list(*_ROW_FIELDS).iterator(chunk_size=chunk_size)
        return _walk(rows, head=head, prev=point.hash if point else GENESIS, last=point)


def _walk(
    rows: Iterable[tuple], *, head: AuditChainHead | None, prev: str, last: ChainPoint | None
) -> Verification:
    count = 0
    for row in rows:
        count += 1
        values = dict(zip(_ROW_FIELDS, row, strict=True))
        reason = ""
        if values["prev_hash"] != prev:
            reason = "prev_hash"
        elif event_hash(event_values(values), prev) != values["hash"]:
            reason = "hash"
        if reason:
            return Verification(
                valid=False, events=count, head=prev, broken_at=values["id"], reason=reason
            )
        prev = values["hash"]
        last = ChainPoint(values["id"], values["created_at"], prev)
    if head is not None and head.event_id is not None and head.hash != prev:
        return Verification(
            valid=False, events=count, head=prev, broken_at=head.event_id, reason="head"
        )
    return Verification(valid=True, events=count, head=prev, last=last)


def verify_recent(*, cache) -> int:
    """Verify each tenant's chain from where the last run left it (beat); return the breaks.

    A tenant's last verified event is remembered in `cache` for a day at most: at least once a
    day each chain is walked whole again, so that an old event altered since is found too. A
    break is logged
    (`audit_chain_broken`, error) and counted (`tenantapi_audit_chain_breaks_total`) at every
    run until someone looks, and the remembered point does not move past it.
    """
    from kernel.context import operator_scope

    with operator_scope("listing the tenants whose audit chains to verify"):
        tenant_ids = list(AuditChainHead.objects.values_list("tenant_id", flat=True))
    breaks = 0
    for tenant_id in tenant_ids:
        key = f"audit-chain:verified:{tenant_id}"
        start = ChainPoint.from_cache(cache.get(key))
        with tenant_context(tenant_id):
            result = verify(tenant_id=tenant_id, start=start)
        if result.valid:
            if result.last is not None:
                cache.set(key, result.last.as_cache(), timeout=FULL_WALK_SECONDS)
            continue
        breaks += 1
        BREAKS.inc()
        log.error(
            "audit_chain_broken",
            tenant_id=str(tenant_id),
            event_id=str(result.broken_at),
            reason=result.reason,
        )
    return breaks


# --- pruning -----------------------------------------------------------------------------------


def anchor_before(*, tenant_id: uuid.UUID, cutoff: datetime.datetime) -> ChainPoint | None:
    """Move the tenant's anchor to its last event older than `cutoff`, before those are pruned.

    Verification then starts after that event, from its hash. Returns the new anchor, or None
    when nothing of the tenant is to be pruned (or it is anchored there already). In the
    caller's transaction and scope; the head stays locked until it commits.
    """
    head = locked_head(tenant_id)
    last = (
        AuditEvent.objects.filter(tenant_id=tenant_id, created_at__lt=cutoff)
        .order_by("-created_at", "-id")
        .values_list("id", "created_at", "hash")
        .first()
    )
    if last is None:
        return None
    point = ChainPoint(*last)
    current = anchor_of(head)
    if current is not None and point.key() <= current.key():
        return None
    head.anchor_event_id = point.event_id
    head.anchor_created_at = point.created_at
    head.anchor_hash = point.hash
    head.save(update_fields=["anchor_event_id", "anchor_created_at", "anchor_hash", "updated_at"])
    return point


# --- re-chaining (erasure) ---------------------------------------------------------------------


class ChainBroken(Exception):
    """The chain does not verify where a rewrite would re-chain it: refused, since re-chaining
    would hide the break. Carries the first broken event's id."""


@dataclass(frozen=True, slots=True)
class Rechained:
    first_event_id: uuid.UUID
    events: int  # re-chained: changed, or re-hashed only because an earlier one changed
    changed: int
    old_head: str
    new_head: str


# What a rewrite may set of an event (what the erasure functions write, migration 0014).
REWRITABLE = ("actor_id", "actor_label", "target_id", "changes", "ip", "user_agent")
REWRITE_BATCH = 500


def rewrite(
    *,
    tenant_id: uuid.UUID,
    change: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    write: Callable[[list[dict[str, Any]]], None],
    chunk_size: int = CHUNK_SIZE,
) -> Rechained | None:
    """Change events of a tenant's log and re-chain it from the first one changed.

    Under the head's lock, in the caller's transaction (the operator scope): the chain is walked
    from its anchor and verified as it goes; `change(row)` gets each event's fields and returns
    the new values of some of `REWRITABLE` (or None: unchanged). From the first event changed
    on, every event gets a new `prev_hash` and `hash`; `write(rows)` stores them in batches.
    Raises ChainBroken, writing nothing, if the chain does not verify: re-chaining a broken
    chain would launder whatever broke it. Returns None when nothing changed.
    """
    head = locked_head(tenant_id)
    anchor = anchor_of(head)
    old = new = anchor.hash if anchor else GENESIS
    first: uuid.UUID | None = None
    events = changed = 0
    batch: list[dict[str, Any]] = []
    rows = chain_events(tenant_id, after=anchor).values_list(*_ROW_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        values = dict(zip(_ROW_FIELDS, row, strict=True))
        if values["prev_hash"] != old or event_hash(event_values(values), old) != values["hash"]:
            raise ChainBroken(values["id"])
        old = values["hash"]
        updates = change(values)
        if updates:
            changed += 1
            first = first or values["id"]
        if first is None:
            new = old
            continue
        values.update(updates or {})
        prev, new = new, event_hash(event_values(values), new)
        events += 1
        batch.append({**event_values(values), "prev_hash": prev, "hash": new})
        if len(batch) >= REWRITE_BATCH:
            write(batch)
            batch = []
    if head.event_id is not None and head.hash != old:
        raise ChainBroken(head.event_id)
    if first is None:
        return None
    if batch:
        write(batch)
    old_head = head.hash
    head.hash = new
    head.save(update_fields=["hash", "updated_at"])
    return Rechained(first, events, changed, old_head, new)


# --- exporting ---------------------------------------------------------------------------------

EXPORT_COLUMNS = (*CANONICAL_FIELDS, "prev_hash", "hash")


def export_stream(
    *,
    fmt: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> TenantStream:
    """The tenant in context's events in chain order, as NDJSON or CSV, hashes included."""
    return TenantStream(_chunks(require_tenant_id(), fmt, since, until, chunk_size))


def _chunks(
    tenant_id: uuid.UUID,
    fmt: str,
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    chunk_size: int,
) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(EXPORT_COLUMNS)
    with transaction.atomic():
        events = chain_events(tenant_id)
        if since is not None:
            events = events.filter(created_at__gte=since)
        if until is not None:
            events = events.filter(created_at__lt=until)
        for row in events.values_list(*_ROW_FIELDS).iterator(chunk_size=chunk_size):
            line = export_line(dict(zip(_ROW_FIELDS, row, strict=True)))
            if fmt == "csv":
                writer.writerow(_csv_cells(line))
            else:
                buffer.write(canonical(line).decode("utf-8"))
                buffer.write("\n")
            if (chunk := flushed(buffer)) is not None:
                yield chunk
    if (chunk := flushed(buffer, at_least=1)) is not None:
        yield chunk


def _csv_cells(line: Mapping[str, Any]) -> list[str]:
    # `changes` as its canonical JSON; null as an empty cell (the fields that may be null, ids
    # and the address, are never empty strings). Cells are not defused for spreadsheets: any
    # change would break the hash they are checked against (docs/audit.md).
    cells = []
    for name in EXPORT_COLUMNS:
        value = line[name]
        if name == "changes":
            cells.append(canonical(value).decode("utf-8"))
        else:
            cells.append("" if value is None else str(value))
    return cells
