"""Erasing a person (GDPR article 17): asked for by the person (`DELETE /api/v1/auth/me/` with
their password) or by an operator (the admin's action), in two steps.

1. **At once** (`erasure_request`, in the request): the account is deactivated, so every access
   token, refresh token, API session and OAuth token of the person is refused from the next
   request, and their open sockets close (the tenants' cached principals are invalidated, the
   sockets re-check); recorded in each of their tenants' logs (and the platform's, for an
   operator). Refused (409) while the person is the last owner of a live tenant: the tenant
   would be left with nobody able to delete it or hand it on.
2. **In a job** (`erase`, `user_erase_task`): their memberships end; each feature removes or
   replaces what it holds of them (kernel/erasure.py, the erasers they register: second
   factors, identities, grants, notifications, webhook payloads, invitations, exports…); the
   account keeps its row (other rows point at it) with the email and name replaced by the
   pseudonym and no usable password; and last, the audit logs are pseudonymised: every event
   that names the person (as actor, target or inside `changes`) is kept with the person
   replaced by their pseudonym, and each tenant's hash chain is re-chained from the first
   event changed, under its lock, recorded by a `tenants.audit.rechained` event
   (docs/data.md says why, and how a tenant checks it).

A job that could not be queued is picked up again by the beat job `user_erasure_sweep_task`:
a requested erasure is never lost.
"""

import uuid

import structlog
from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from accounts.actions import AccountsAction
from kernel import audit, audit_chain, erasure
from kernel.context import operator_scope, tenant_context
from kernel.permissions import OWNER
from kernel.principals import access_changed
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Membership, MembershipRole, Tenant

log = structlog.get_logger(__name__)
User = get_user_model()


def sole_owner_of(*, user_id: uuid.UUID) -> list[Tenant]:
    """The live tenants of which the person is the only owner."""
    with operator_scope("finding the tenants a person is the last owner of"):
        owned = Membership.objects.filter(
            user_id=user_id, roles__name=OWNER, tenant__deleted_at__isnull=True
        ).values_list("tenant_id", flat=True)
        tenants = []
        for tenant in Tenant.objects.filter(pk__in=list(owned)).order_by("slug"):
            others = (
                MembershipRole.objects.filter(tenant=tenant, role__name=OWNER)
                .exclude(membership__user_id=user_id)
                .exists()
            )
            if not others:
                tenants.append(tenant)
        return tenants


@transaction.atomic
def erasure_request(*, user, operator=None) -> None:
    """Deactivate the person now and queue their erasure (the password, for a person asking
    themselves, is checked by the view). `operator`: the staff user who asked, if one did."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.erased_at is not None or user.erasure_requested_at is not None:
        return
    sole = sole_owner_of(user_id=user.pk)
    if sole:
        slugs = ", ".join(tenant.slug for tenant in sole)
        raise Problem(
            ProblemType.CONFLICT,
            detail=(
                f"You are the last owner of {slugs}: make someone else an owner, or delete the "
                "tenant, before erasing your account."
                if operator is None
                else f"The person is the last owner of {slugs}: another owner is needed first."
            ),
        )
    user.is_active = False
    user.erasure_requested_at = timezone.now()
    user.save(update_fields=["is_active", "erasure_requested_at"])
    actor = audit.Actor.user(user) if operator is None else None
    with operator_scope("listing the tenants of a person to be erased"):
        tenant_ids = sorted(
            set(Membership.objects.filter(user_id=user.pk).values_list("tenant_id", flat=True))
        )
    # In the tenants' ids' order: each event locks its tenant's chain head (record_account_change).
    for tenant_id in tenant_ids:
        with tenant_context(tenant_id):
            audit.record(
                tenant_id=tenant_id,
                action=AccountsAction.USER_ERASURE_REQUESTED,
                target_type="user",
                target_id=user.pk,
                actor=actor,
            )
        access_changed(tenant_id)
    if operator is not None:
        audit.record_platform(
            action=AccountsAction.USER_ERASURE_REQUESTED, target_type="user", target_id=user.pk
        )
    user_id = user.pk
    transaction.on_commit(lambda: _enqueue(user_id))


def _enqueue(user_id: uuid.UUID) -> None:
    try:
        user_erase_task.delay(str(user_id))
    except (OSError, KombuError):
        # The broker is unreachable: the sweep (beat) queues it again.
        log.exception("user_erasure_not_queued", user_id=str(user_id))


def erase(*, user_id: uuid.UUID) -> bool:
    """Erase a person whose erasure was asked for; False when there is nothing (left) to do."""
    with transaction.atomic(), operator_scope("erasing a person"):
        user = (
            User.objects.select_for_update()
            .filter(pk=user_id, erasure_requested_at__isnull=False, erased_at__isnull=True)
            .first()
        )
        if user is None:
            return False
        person = erasure.ErasedPerson(user_id=user.pk, email=user.email, name=user.name)
        memberships = Membership.objects.filter(user_id=user.pk)
        tenant_ids = sorted(set(memberships.values_list("tenant_id", flat=True)))
        for tenant_id in tenant_ids:
            with tenant_context(tenant_id):
                audit.record(
                    tenant_id=tenant_id,
                    action=AccountsAction.USER_ERASED,
                    target_type="user",
                    target_id=user.pk,
                    actor=audit.SYSTEM,
                )
        memberships.delete()
        for eraser in erasure.erasers():
            eraser(person)
        user.email = person.pseudonym_email
        user.name = ""
        user.set_unusable_password()
        user.erased_at = timezone.now()
        user.save(update_fields=["email", "name", "password", "erased_at"])
        # Last: the events the steps above recorded are pseudonymised with the others.
        try:
            rechained = erasure.audit_pseudonymise(person)
        except audit_chain.ChainBroken as broken:
            # Nothing is erased (the transaction rolls back); the person stays deactivated, and
            # the sweep tries again once the chain is repaired. The verification job alerts.
            log.error("user_erasure_chain_broken", event_id=str(broken.args[0]))
            raise
    for tenant_id in tenant_ids:
        access_changed(tenant_id)
    log.info("user_erased", user_id=str(person.pseudonym_id), tenants_rechained=rechained)
    return True


@shared_task(name="accounts.tasks.user_erase_task", autoretry_for=(OSError,), retry_backoff=True)
def user_erase_task(user_id: str) -> bool:
    """Erase a person whose erasure was asked for."""
    return erase(user_id=uuid.UUID(user_id))


def erasures_pending() -> list[uuid.UUID]:
    """Erasures asked for and not done (their job lost, or failed): the sweep's work."""
    return list(
        User.objects.filter(erasure_requested_at__isnull=False, erased_at__isnull=True)
        .order_by("erasure_requested_at")
        .values_list("pk", flat=True)
    )


def erase_account_data(person: erasure.ErasedPerson) -> None:
    """The accounts feature's eraser (registered from AccountsConfig.ready()): the person's
    second factor, recovery codes, identities at tenants' providers and issued refresh tokens
    go; the API keys they created stay the tenants' (their creator forgotten); what the admin's
    history says of them is pseudonymised."""
    from django.contrib.admin.models import LogEntry
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    from accounts.models import ApiKey, RecoveryCode, SsoIdentity, TotpDevice

    TotpDevice.objects.filter(user_id=person.user_id).delete()
    RecoveryCode.objects.filter(user_id=person.user_id).delete()
    SsoIdentity.objects.filter(user_id=person.user_id).delete()
    ApiKey.objects.filter(created_by_id=person.user_id).update(created_by=None)
    OutstandingToken.objects.filter(user_id=person.user_id).delete()
    for entry in LogEntry.objects.filter(object_repr__icontains=person.email):
        entry.object_repr = person.scrub_text(entry.object_repr)
        entry.change_message = person.scrub_text(entry.change_message)
        entry.save(update_fields=["object_repr", "change_message"])
