"""The audit log: who did what to which object of a tenant, written with the change itself.

Services call `record()` inside the transaction of the change they make, so a change and its
event commit or roll back together: there is never one without the other. `record()` refuses to
run outside a transaction to keep that promise honest.

Who acted and from where is not passed around: it lives in a request-scoped context variable.

- `TenantScopeMiddleware` opens an `AuditContext` for every request (`request_context()`), with
  the client's address and user agent and no actor yet.
- Authentication fills in the actor once the credential is verified (`set_request_actor()`):
  the person of an access token, or the API key.
- The admin site runs every admin view `acting_as()` the operator.
- Work done outside any of these (commands, beat jobs) is the system's. A Celery task runs with
  the context of the request that sent it (a propagator carries it in the message).
- A few public endpoints (signup, accepting an invitation, logout, password reset) learn who is
  acting only once they have checked what they were given; they name the actor explicitly.

The log is append-only: the model and its queryset refuse updates and deletes, the admin is
read-only, the API has no write route, and on PostgreSQL a trigger refuses UPDATE and DELETE
for everyone but the database functions that prune old events (each tenant's at its own
retention, kernel/retention.py) and purge a deleted tenant's (migrations tenants/0004,
0011). docs/audit.md has the details and the trade-offs.

Each tenant's log is also a hash chain (kernel/audit_chain.py): `record()` links every event to
the one before under a per-tenant lock, and `prune()` anchors the chain before deleting, so that
a tenant can prove its log intact with nothing but an export of it. A tenant whose webhook
endpoints take `audit.event` also gets each event published as it is recorded (the chain's
`append()`), so that a copy leaves us as it is written.

Changes to what belongs to no tenant (plans, users) go to the platform's log instead, through
`record_platform()`, on the same terms: same transaction, actor from context, secrets redacted,
append-only (migration tenants/0005), pruned with the rest.
"""

import datetime
import decimal
import ipaddress
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from kernel import audit_chain, retention
from kernel.clientip import client_ip
from kernel.context import current_scope, operator_scope, tenant_context
from kernel.events import topics
from kernel.logging import is_secret_key, mask_secrets
from kernel.permissions import Perm
from kernel.retention import AUDIT
from kernel.tenancy.models import AuditEvent, PlatformAuditEvent
from kernel.tracing import ContextPropagator, get_request_id, register_propagator

ActorType = AuditEvent.ActorType

REDACTED = "[REDACTED]"
USER_AGENT_MAX = AuditEvent._meta.get_field("user_agent").max_length
_ACTION = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
# Field names whose values never reach the log, besides everything kernel.logging calls secret
# (password, token, key, secret, ...): digests of secrets are secrets' stand-ins.
_SECRET_FIELD_WORDS = ("hash", "digest", "salt")


# Every action an event may name: each app's enum, registered from its AppConfig.ready(). The
# values are what the log stores, so a typo is refused when it is written, not found later by a
# filter that matches nothing.
_actions: set[str] = set()


def register_actions(actions: type[StrEnum]) -> None:
    """Make every member of `actions` an action that events may name."""
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise ValueError(f"An audit action is <app>.<entity>.<verb>, not {action!r}.")
        _actions.add(str(action))


def registered_actions() -> frozenset[str]:
    return frozenset(_actions)


class AuditOutsideTransaction(RuntimeError):
    """`record()` was called outside a transaction: the event could outlive a failed change."""


@dataclass(frozen=True, slots=True)
class Actor:
    type: str
    id: uuid.UUID | None = None
    label: str = ""
    # The third-party app a person acts through (an OAuth token), if any.
    app_id: uuid.UUID | None = None
    app_label: str = ""

    @classmethod
    def user(cls, user, *, app=None) -> "Actor":
        if app is None:
            return cls(type=ActorType.USER, id=user.pk, label=user.email)
        return cls(
            type=ActorType.USER, id=user.pk, label=user.email, app_id=app.pk, app_label=app.name
        )

    @classmethod
    def api_key(cls, api_key) -> "Actor":
        return cls(type=ActorType.API_KEY, id=api_key.pk, label=api_key.name)

    @classmethod
    def operator(cls, user) -> "Actor":
        return cls(type=ActorType.OPERATOR, id=user.pk, label=user.email)


SYSTEM = Actor(type=ActorType.SYSTEM, label="system")


@dataclass(frozen=True, slots=True)
class AuditContext:
    actor: Actor | None = None
    ip: str | None = None
    user_agent: str = ""


_context: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


# --- the context -------------------------------------------------------------------------------


@contextmanager
def request_context(request) -> Iterator[AuditContext]:
    """Where a request comes from, for every event recorded while it is served."""
    context = AuditContext(
        ip=_valid_ip(client_ip(request)),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:USER_AGENT_MAX],
    )
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def _valid_ip(address: str) -> str | None:
    # The column is an inet: a socket that gives no address (or not one) must not fail a write.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (`::ffff:1.2.3.4`) is that IPv4 client; and
    # Python and PostgreSQL spell the mapped form differently (`::ffff:102:304`), which would
    # make the hash computed here differ from the one computed over what is read back.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def set_request_actor(actor: Actor) -> None:
    """Name the actor for the rest of the current request (authentication calls this).

    Like `enter_tenant_for_request`, it cannot be a `with` block: DRF authenticates in the middle
    of the view. The request's `request_context()` restores the previous value when it ends.
    """
    _context.set(replace(_context.get() or AuditContext(), actor=actor))


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Record the events of the block as `actor`'s (the admin site wraps operators' views)."""
    token = _context.set(replace(_context.get() or AuditContext(), actor=actor))
    try:
        yield
    finally:
        _context.reset(token)


# --- recording ---------------------------------------------------------------------------------


def record(
    *,
    tenant_id: uuid.UUID | str,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None = None,
    changes: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> AuditEvent:
    """Write one event in a tenant's log, in the caller's transaction.

    `action` is `<app>.<entity>.<verb>` (`catalog.product.updated`). `changes` is a diff,
    `{field: [old, new]}` (see `diff()`); secret fields and secret-looking values are redacted
    here, whatever the caller passes. `actor` defaults to the one in context, else the system.
    The event joins the tenant's hash chain (kernel/audit_chain.py) under the chain's lock.
    """
    tenant_id = tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id))
    event = AuditEvent(
        tenant_id=tenant_id,
        **_event_fields(
            action=action,
            target_type=target_type,
            target_id=target_id,
            changes=changes,
            actor=actor,
        ),
    )
    scope = current_scope()
    if scope.tenant_id is None and not scope.operator:
        # A public endpoint (signup, logout, ...) knows the tenant only from what it checked.
        with tenant_context(tenant_id):
            audit_chain.append(event)
    else:
        # In another tenant's scope this raises CrossTenantWrite, as any tenant-owned write does
        # (the chain head is tenant-owned too).
        audit_chain.append(event)
    return event


def record_platform(
    *,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None = None,
    changes: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> PlatformAuditEvent:
    """Write one event in the platform's log: a change to something no tenant owns (a plan, a
    user), in the caller's transaction. The same rules as `record()`: the actor from context
    (the operator in the admin, the system in a command), secrets redacted."""
    event = PlatformAuditEvent(
        **_event_fields(
            action=action,
            target_type=target_type,
            target_id=target_id,
            changes=changes,
            actor=actor,
        )
    )
    event.save()
    return event


def _event_fields(
    *,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    changes: Mapping[str, Any] | None,
    actor: Actor | None,
) -> dict[str, Any]:
    """What every event says, whichever log it goes to: checked, redacted, with its context."""
    if not connection.in_atomic_block:
        raise AuditOutsideTransaction(
            "audit.record() must run in the transaction of the change it records."
        )
    if action not in _actions:
        raise ValueError(f"{action!r} is not a registered audit action (register_actions).")
    context = _context.get() or AuditContext()
    actor = actor or context.actor or SYSTEM
    return {
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_label": actor.label[:254],
        "actor_app_id": actor.app_id,
        "actor_app_label": actor.app_label[:200],
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id) if target_id is not None else "",
        "changes": redact(changes or {}),
        "request_id": get_request_id() or "",
        "ip": context.ip,
        "user_agent": context.user_agent,
    }


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`{field: [old, new]}` for each field whose value differs, as JSON-ready values."""
    changes = {}
    for field in sorted(set(before) | set(after)):
        old, new = _plain(before.get(field)), _plain(after.get(field))
        if old != new:
            changes[field] = [old, new]
    return changes


def created(values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The diff of an object that did not exist before."""
    return diff({}, values)


def deleted(values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The diff of an object that exists no more."""
    return diff(values, {})


def redact(value: Any, *, key: str = "") -> Any:
    """The value with every secret field replaced by a marker and secret-looking text masked.

    A redacted field of a diff keeps its place (`{"password": ["[REDACTED]", "[REDACTED]"]}`),
    so the log still says that it changed.
    """
    if key and _is_secret_field(key):
        if isinstance(value, list | tuple) and len(value) == 2:
            return [None if item is None else REDACTED for item in value]
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return mask_secrets(value)
    return _plain(value)


def _is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return is_secret_key(name) or any(word in lowered for word in _SECRET_FIELD_WORDS)


def _plain(value: Any) -> Any:
    """A JSON value: ids and decimals as strings, times in RFC 3339."""
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(_plain(item) for item in value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --- retention ---------------------------------------------------------------------------------

# Created by migrations tenants/0004, 0005 and 0011 on PostgreSQL; they run as the audit
# functions' owner, the only role the trigger lets delete (kernel/tenancy/rls.py).
PRUNE_FUNCTION = "tenants_auditevent_prune"  # every tenant at one cut-off: no longer called
PRUNE_TENANTS_FUNCTION = "tenants_auditevent_prune_tenants"
PLATFORM_PRUNE_FUNCTION = "tenants_platformauditevent_prune"
PURGE_TENANT_FUNCTION = "tenants_auditevent_purge_tenant"


def retention_cutoff() -> datetime.datetime:
    """The platform log's cut-off (AUDIT_RETENTION_DAYS); tenants' logs follow their plans."""
    days = settings.AUDIT_RETENTION_DAYS
    if days < 1:
        raise ImproperlyConfigured("AUDIT_RETENTION_DAYS must be at least 1.")
    return timezone.now() - datetime.timedelta(days=days)


def prune() -> int:
    """Delete each tenant's events older than its retention (kernel/retention.py), and the
    platform's older than AUDIT_RETENTION_DAYS. Returns how many were deleted.

    Tenants are taken `RETENTION_BATCH_SIZE` at a time: a query for their cut-offs, one for
    those of them with anything to prune, the anchoring of each of those (a transaction each,
    committed first: kernel/audit_chain.py) and one call of the database function that deletes
    the batch's events, each tenant's at its own cut-off, the very one its chain was anchored at.
    On PostgreSQL the database refuses a cut-off less than a day old, whoever asks, and never
    deletes an event its tenant's retention still keeps.
    """
    deleted_count = sum(_prune_tenants(batch) for batch in retention.cutoff_batches(AUDIT))
    return deleted_count + _prune_platform(retention_cutoff())


def _prune_tenants(batch: retention.Cutoffs) -> int:
    with operator_scope("finding the tenants whose audit events are past their retention"):
        # Each tenant once, however many of its events are to go.
        tenant_ids = list(
            AuditEvent.objects.filter(batch.q())
            .order_by()
            .values_list("tenant_id", flat=True)
            .distinct()
        )
    if not tenant_ids:
        return 0
    cutoffs = [batch.by_tenant[tenant_id] for tenant_id in tenant_ids]
    for tenant_id, cutoff in zip(tenant_ids, cutoffs, strict=True):
        _anchor_chain(tenant_id=tenant_id, cutoff=cutoff)
    # The scope outside the transaction: still held when a failure rolls the transaction back.
    with (
        operator_scope("pruning tenants' audit events past their retention"),
        transaction.atomic(),
    ):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {PRUNE_TENANTS_FUNCTION}(%s::uuid[], %s::timestamptz[])",
                    [tenant_ids, cutoffs],
                )
                return int(cursor.fetchone()[0])
        # SQLite (the embedded default) has no trigger to get past.
        pruned = retention.Cutoffs(dict(zip(tenant_ids, cutoffs, strict=True)))
        return AuditEvent.objects.filter(pruned.q())._raw_delete(connection.alias)


def _prune_platform(cutoff: datetime.datetime) -> int:
    with (
        operator_scope("pruning platform audit events past their retention"),
        transaction.atomic(),
    ):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {PLATFORM_PRUNE_FUNCTION}(%s)", [cutoff])
                return int(cursor.fetchone()[0])
        return PlatformAuditEvent.objects.filter(created_at__lt=cutoff)._raw_delete(
            connection.alias
        )


PRUNED_ACTION = "tenants.audit.pruned"  # kernel.tenants.TenancyAction.AUDIT_PRUNED


def _anchor_chain(*, tenant_id: uuid.UUID, cutoff: datetime.datetime) -> None:
    """Before a tenant's oldest events go, make the last of them the chain's anchor, and say so
    in the chain itself (`tenants.audit.pruned`, whose hash then covers the anchor's).

    A transaction per tenant, committed before the deletion: should the prune fail, the events
    left before the anchor are merely no longer verified, and the next run goes on.
    """
    with operator_scope("anchoring an audit chain before pruning"), transaction.atomic():
        head = audit_chain.locked_head(tenant_id)
        before = audit_chain.anchor_of(head)
        point = audit_chain.anchor_before(tenant_id=tenant_id, cutoff=cutoff)
        if point is None:
            return
        record(
            tenant_id=tenant_id,
            action=PRUNED_ACTION,
            target_type="audit_log",
            target_id=point.event_id,
            changes={
                "anchor_event_id": [
                    str(before.event_id) if before else None,
                    str(point.event_id),
                ],
                "anchor_created_at": [
                    audit_chain.format_time(before.created_at) if before else None,
                    audit_chain.format_time(point.created_at),
                ],
                "anchor": [before.hash if before else audit_chain.GENESIS, point.hash],
            },
            actor=SYSTEM,
        )


def purge_tenant_events(*, tenant_id: uuid.UUID | str) -> int:
    """Delete a soft-deleted tenant's events, as part of purging its data.

    The caller holds the operator scope and the transaction of the purge; on PostgreSQL the
    database refuses unless the tenant is marked deleted.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {PURGE_TENANT_FUNCTION}(%s)", [str(tenant_id)])
            (deleted_count,) = cursor.fetchone()
        return int(deleted_count)
    return AuditEvent.objects.filter(tenant_id=tenant_id)._raw_delete(connection.alias)


# --- into background tasks -----------------------------------------------------------------------


def _capture() -> dict[str, Any]:
    context = _context.get()
    if context is None:
        return {}
    captured: dict[str, Any] = {"ip": context.ip, "user_agent": context.user_agent}
    if context.actor is not None:
        captured["actor"] = {
            **asdict(context.actor),
            "id": _plain(context.actor.id),
            "app_id": _plain(context.actor.app_id),
        }
    return captured


@contextmanager
def _restore(captured: Mapping[str, Any]) -> Iterator[None]:
    actor = captured.get("actor")
    context = AuditContext(
        actor=Actor(
            type=actor["type"],
            id=uuid.UUID(actor["id"]) if actor.get("id") else None,
            label=actor.get("label", ""),
            app_id=uuid.UUID(actor["app_id"]) if actor.get("app_id") else None,
            app_label=actor.get("app_label", ""),
        )
        if actor
        else None,
        ip=captured.get("ip"),
        user_agent=captured.get("user_agent", ""),
    )
    # Set even when nothing was captured: a task sent by the system acts as the system.
    token = _context.set(context if captured else None)
    try:
        yield
    finally:
        _context.reset(token)


def register() -> None:
    """A task records its events as the request that sent it; the log's stream is a topic that
    needs `audit.read`, for webhooks only (called from KernelConfig)."""
    register_propagator(ContextPropagator(name="audit", capture=_capture, restore=_restore))
    topics.register(audit_chain.AuditTopic, read_permission=Perm.AUDIT_READ, notified=False)
