"""Erasing a person (GDPR article 17): what each feature removes or replaces of them.

The person's account is the accounts feature's (accounts/erasure.py runs the erasure); their
data is in every feature's tables. Each feature registers an eraser from its
`AppConfig.ready()` (`register(eraser)`), as it registers its topics and audit actions; the
erasure calls them all, in the operator scope and in one transaction, then pseudonymises the
audit logs (kernel/audit_chain.py, `rewrite`), last, so that the events the erasure itself
recorded are pseudonymised too.

**The pseudonym** is a stable HMAC of the user's id (keyed by `SECRET_KEY`, salted for this
use): the same person always gets the same pseudonym, so that the events of one actor still
correlate after their erasure, and nobody without the key can tell whose it was. It has the
two forms the log needs: a UUID (`pseudonym_id`, for id columns: `actor_id`, `target_id`) and a
label (`erased-<16 hex digits>`, for text: `actor_label`, and wherever the email or the name
appeared).
"""

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils.crypto import salted_hmac

from kernel import audit, audit_chain
from kernel.context import tenant_context
from kernel.tenancy.models import AuditEvent, PlatformAuditEvent


class ErasureAction(StrEnum):
    """Registered from KernelConfig.ready(). A tenant's chain re-chained after an erasure
    pseudonymised some of its events: the old head and the new, the first event changed, how
    many were changed and re-chained."""

    AUDIT_RECHAINED = "tenants.audit.rechained"


_SALT = "kernel.erasure.pseudonym"
PSEUDONYM_DOMAIN = "erased.invalid"


@dataclass(frozen=True, slots=True)
class ErasedPerson:
    """Who is being erased, and what replaces them."""

    user_id: uuid.UUID
    email: str
    name: str

    @property
    def digest(self) -> bytes:
        return salted_hmac(_SALT, str(self.user_id), algorithm="sha256").digest()

    @property
    def pseudonym_id(self) -> uuid.UUID:
        # The HMAC's first 16 bytes as a UUID of version 8 (RFC 9562: custom).
        raw = bytearray(self.digest[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return uuid.UUID(bytes=bytes(raw))

    @property
    def pseudonym(self) -> str:
        return f"erased-{self.digest.hex()[:16]}"

    @property
    def pseudonym_email(self) -> str:
        return f"{self.pseudonym}@{PSEUDONYM_DOMAIN}"

    def _needles(self) -> list[tuple[str, str]]:
        needles = [(self.email, self.pseudonym_email), (str(self.user_id), str(self.pseudonym_id))]
        if self.name.strip():
            needles.append((self.name, self.pseudonym))
        return needles

    def mentioned_in(self, text: str) -> bool:
        folded = text.casefold()
        return any(needle.casefold() in folded for needle, _ in self._needles())

    def scrub_text(self, text: str) -> str:
        """`text` with the person's email, name and id replaced by their pseudonym's."""
        for needle, replacement in self._needles():
            text = _replace_folded(text, needle, replacement)
        return text

    def scrub(self, value: Any) -> Any:
        """A JSON value with the person replaced wherever a string holds them, keys included."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, dict):
            return {self.scrub_text(key): self.scrub(item) for key, item in value.items()}
        return value


def _replace_folded(text: str, needle: str, replacement: str) -> str:
    """Replace every occurrence of `needle`, whatever its case (emails are stored lower-cased,
    but text written about them need not be)."""
    if not needle:
        return text
    folded, target = text.casefold(), needle.casefold()
    if target not in folded or len(folded) != len(text):
        # casefold() changed the length (ß → ss): fall back to the exact spelling only.
        return text.replace(needle, replacement)
    pieces, start = [], 0
    while (found := folded.find(target, start)) != -1:
        pieces.append(text[start:found])
        pieces.append(replacement)
        start = found + len(target)
    pieces.append(text[start:])
    return "".join(pieces)


Eraser = Callable[[ErasedPerson], None]
_erasers: list[Eraser] = []


def register(eraser: Eraser) -> None:
    """Have `eraser(person)` remove or replace what its feature holds of a person being erased.

    It runs in the operator scope, in the erasure's transaction: it must leave no email, name or
    id of the person in its tables (docs/data.md says what each keeps), and must not fail on a
    person it holds nothing of.
    """
    if eraser not in _erasers:
        _erasers.append(eraser)


def erasers() -> list[Eraser]:
    return list(_erasers)


# --- the audit logs ----------------------------------------------------------------------------


def _naming(person: ErasedPerson) -> Q:
    """The events that name the person: as actor, as target, or inside `changes`. A scan of the
    logs' text (their `changes` read as text): erasure is rare, and must miss nothing."""
    uid = str(person.user_id)
    return (
        Q(actor_id=person.user_id)
        | Q(target_id=uid)
        | Q(actor_label__iexact=person.email)
        | Q(changes__icontains=person.email)
        | Q(changes__icontains=uid)
    )


def _pseudonymised(person: ErasedPerson, event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The new values of an event that names the person, or None for one that does not. The
    address and user agent of the person's own requests go; those of others who acted on them
    stay."""
    uid = str(person.user_id)
    acted = event["actor_id"] == person.user_id
    named = (
        acted
        or event["target_id"] == uid
        or person.mentioned_in(event["actor_label"] or "")
        or person.mentioned_in(json.dumps(event["changes"], ensure_ascii=False))
    )
    if not named:
        return None
    updates: dict[str, Any] = {
        "actor_label": person.scrub_text(event["actor_label"] or ""),
        "target_id": str(person.pseudonym_id) if event["target_id"] == uid else event["target_id"],
        "changes": person.scrub(event["changes"]),
    }
    if acted:
        updates |= {"actor_id": person.pseudonym_id, "actor_label": person.pseudonym}
        updates |= {"ip": None, "user_agent": ""}
    changed = {name: value for name, value in updates.items() if event[name] != value}
    return changed or None


def _writer(table: str, function: str) -> Callable[[list[dict[str, Any]]], None]:
    """Stores rewritten events: through the erasure function on PostgreSQL (the trigger lets
    nothing else change an event), with plain UPDATEs on SQLite, which has no trigger."""

    def write(rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"SELECT {function}(%s::jsonb)", [json.dumps(rows)])
                return
            hashes = "prev_hash" in rows[0]
            for row in rows:
                fields = [*audit_chain.REWRITABLE, *(("prev_hash", "hash") if hashes else ())]
                values = [
                    json.dumps(row[name]) if name == "changes" else row[name] for name in fields
                ]
                assignments = ", ".join(f"{name} = %s" for name in fields)
                cursor.execute(
                    f"UPDATE {table} SET {assignments} WHERE id = %s",  # noqa: S608  (names are ours)
                    [*values, uuid.UUID(row["id"]).hex],
                )

    return write


def _platform_rows(person: ErasedPerson) -> Iterator[list[dict[str, Any]]]:
    fields = ("id", *audit_chain.REWRITABLE)
    events = PlatformAuditEvent.objects.filter(_naming(person)).values(*fields)
    batch = []
    for event in events.iterator(chunk_size=audit_chain.REWRITE_BATCH):
        updates = _pseudonymised(person, event)
        if updates:
            values = {**event, **updates}
            batch.append(
                {
                    "id": str(values["id"]),
                    **{
                        name: audit_chain.plain_value(name, values[name])
                        for name in audit_chain.REWRITABLE
                    },
                }
            )
        if len(batch) >= audit_chain.REWRITE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def audit_pseudonymise(person: ErasedPerson) -> int:
    """Replace the person by their pseudonym in every event that names them, in every tenant's
    log and the platform's; re-chain each tenant's log from its first event changed, and record
    that in the log. In the operator scope and the caller's transaction; the tenants
    re-chained. Raises audit_chain.ChainBroken (and so changes nothing) if a chain to re-chain
    does not verify."""
    tenant_ids = sorted(
        set(AuditEvent.objects.filter(_naming(person)).values_list("tenant_id", flat=True))
    )
    write = _writer("tenants_auditevent", "tenants_auditevent_erase")
    rechained = 0
    for tenant_id in tenant_ids:
        result = audit_chain.rewrite(
            tenant_id=tenant_id,
            change=lambda event: _pseudonymised(person, event),
            write=write,
        )
        if result is None:
            continue
        rechained += 1
        with tenant_context(tenant_id):
            audit.record(
                tenant_id=tenant_id,
                action=ErasureAction.AUDIT_RECHAINED,
                target_type="tenant",
                target_id=tenant_id,
                changes={
                    "head": [result.old_head, result.new_head],
                    "from_event_id": [None, str(result.first_event_id)],
                    "events_changed": [None, result.changed],
                    "events_rechained": [None, result.events],
                    "reason": [None, "erasure"],
                },
                actor=audit.SYSTEM,
            )
    write_platform = _writer("tenants_platformauditevent", "tenants_platformauditevent_erase")
    for batch in _platform_rows(person):
        write_platform(batch)
    return rechained


# --- the kernel's own tables -------------------------------------------------------------------


def erase_kernel_data(person: ErasedPerson) -> None:
    """The kernel's eraser (registered from KernelConfig.ready()): invitations to the person's
    email keep their place with the pseudonym's, those they sent forget who sent them; events
    still waiting in the outbox are pseudonymised; the archives of their own exports are
    deleted."""
    from kernel.exports import services as exports
    from kernel.models import Job, OutboxEvent
    from kernel.tenancy.models import Invitation

    Invitation.objects.filter(email__iexact=person.email).update(email=person.pseudonym_email)
    Invitation.objects.filter(invited_by_id=person.user_id).update(invited_by=None)
    for event in OutboxEvent.objects.filter(message__icontains=person.email).only("message"):
        OutboxEvent.objects.filter(pk=event.pk).update(message=person.scrub(event.message))
    own_exports = Job.objects.filter(
        kind=exports.PERSONAL_EXPORT.code, created_by_user_id=person.user_id
    ).filter(result__has_key="archive")
    for job_id, result in own_exports.exclude(result__archive=None).values_list("pk", "result"):
        exports.archive_delete(job_id=job_id, result=result)
