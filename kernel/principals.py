"""Who is calling, in which tenant, with which permissions: the `Principal`, and how a person's
is resolved, once per request, with a cache in front of the database.

A request with a valid token costs one cache round trip and no SQL: a single `get_many` reads,
in the tenant's cache namespace, the tenant's access epoch, the member's cached snapshot and the
session's revocation mark. The snapshot is trusted only if it was built under the current epoch.

Whatever changes who may do what in a tenant bumps its epoch (`access_changed(tenant_id)`):
roles, memberships, the tenant's status or plan, a member's password or active flag. The
services that make those changes call it, after commit; a snapshot also expires on its own after
PRINCIPAL_CACHE_SECONDS as a bound on anything missed. If Redis is down, every request reads the
database instead: slower, never wrong.
"""

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from rest_framework_simplejwt.utils import get_md5_hash_password

from kernel import second_factor
from kernel.context import tenant_context
from kernel.redis import REDIS_ERRORS
from kernel.tenancy.models import Membership, Plan, Tenant
from kernel.tenancy.selectors import membership_for_principal, membership_roles


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    permissions: frozenset[str]
    user: Any = None
    membership: Membership | None = None
    # Names of the member's roles (owner, admin, …): what "only an owner may" rules read.
    roles: frozenset[str] = frozenset()
    # Set when the caller is a machine (API key) rather than a person.
    api_key: Any = None
    # The validated access token's claims, for people.
    claims: dict = field(default_factory=dict)
    # Set when a person acts through a third-party app (an OAuth token): the app, whose scopes
    # have already narrowed `permissions`.
    app: Any = None
    # Whether the person has a second factor (kernel/second_factor.py); known where the tenant
    # requires one, the only place it is asked.
    second_factor: bool = False
    # Whether the person signed in through the tenant's own identity provider (single sign-on),
    # which vouched for them: its own factors are the tenant's to require, not ours.
    sso: bool = False

    @property
    def held_to_enrolment(self) -> bool:
        """A person signed in with their password to a tenant that requires a second factor,
        who has none yet: until they set one up, that is all they may do. Not an API key (no
        person signs in), nor an app (the person who authorized it signed in where they had
        to), nor a sign-in through the tenant's identity provider: docs/security.md."""
        return bool(
            self.tenant.require_mfa
            and self.user is not None
            and self.api_key is None
            and self.app is None
            and not self.sso
            and not self.second_factor
        )

    def has_permission(self, code: str) -> bool:
        # Held to enrolment, no permission holds: a surface that forgot to ask still refuses.
        return code in self.permissions and not self.held_to_enrolment


log = structlog.get_logger(__name__)

EPOCH_KEY = "access-epoch"


def _snapshot_key(user_id: uuid.UUID) -> str:
    # 4: the tenant's settings travel as JSON text (`tenant_snapshot`), the user's date_joined
    # too, and whether the tenant requires a second factor and the person has one; older
    # snapshots are simply not found, and expire.
    return f"principal:4:{user_id}"


_TENANT_FIELDS = (
    "id",
    "name",
    "slug",
    "status",
    "require_mfa",
    "audit_retention_days",
    "notification_retention_days",
    "created_at",
    "deleted_at",
)
_USER_FIELDS = ("id", "email", "name", "is_active", "date_joined")


def tenant_snapshot(tenant: Tenant) -> dict[str, Any]:
    """What a cached credential keeps of its tenant and plan. The tenant's settings are JSON
    chosen by the tenant: they travel as text, so that no shape of theirs (nested hundreds of
    levels, say) can break the pickling of a snapshot, nor so its authentication."""
    return {
        "tenant": {field: getattr(tenant, field) for field in _TENANT_FIELDS},
        "settings": json.dumps(tenant.settings or {}),
        "plan": {
            field.attname: getattr(tenant.plan, field.attname)
            for field in Plan._meta.concrete_fields
        },
    }


def tenant_from_snapshot(snapshot: dict[str, Any]) -> Tenant:
    """The tenant `tenant_snapshot` kept, with its plan: read it, never save it."""
    return Tenant(
        plan=Plan(**snapshot["plan"]),
        settings=json.loads(snapshot["settings"]),
        **snapshot["tenant"],
    )


def _revoked_key(session_id: str) -> str:
    return f"revoked-session:{session_id}"


@dataclass(frozen=True, slots=True)
class Resolved:
    principal: Principal | None
    # Digest of the member's password hash, compared with the token's `pwd` claim.
    password_digest: str = ""
    session_revoked: bool = False
    # The values of the `read_ahead` keys that were found (absent when the cache had none).
    read_ahead: dict[str, Any] = field(default_factory=dict)
    # The tenant's access epoch the principal was built under (None: not known).
    epoch: Any = None


def resolve_principal(
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    session_id: str,
    read_ahead: Sequence[str] = (),
) -> Resolved:
    """The member's principal; `read_ahead` names more keys of the tenant's cache to read in the
    same round trip, for a request that knows it will need them (kernel/api/cached_reads.py)."""
    with tenant_context(tenant_id):
        keys = [EPOCH_KEY, _snapshot_key(user_id), _revoked_key(session_id), *read_ahead]
        try:
            found = cache.get_many(keys)
        except REDIS_ERRORS:
            log.warning("principal_cache_unavailable")
            return _from_database(user_id, epoch=None, store=False)
        if _revoked_key(session_id) in found:
            return Resolved(principal=None, session_revoked=True)
        epoch = found.get(EPOCH_KEY)
        snapshot = found.get(_snapshot_key(user_id))
        if snapshot is not None and snapshot["epoch"] == epoch:
            resolved = _from_snapshot(snapshot)
        else:
            # An epoch to build the snapshot under, settled before the database is read: a change
            # committed after the read bumps it, and the snapshot is not trusted again.
            epoch = epoch if epoch is not None else _settled_epoch()
            resolved = _from_database(user_id, epoch=epoch, store=True)
        ahead = {key: found[key] for key in read_ahead if key in found}
        return replace(resolved, read_ahead=ahead) if ahead else resolved


def _settled_epoch() -> Any:
    """The tenant's epoch, created if it has none yet (a tenant whose access never changed)."""
    candidate = uuid.uuid4().hex
    try:
        if cache.add(EPOCH_KEY, candidate, timeout=None):
            return candidate
        return cache.get(EPOCH_KEY)
    except REDIS_ERRORS:
        log.warning("principal_cache_unavailable")
        return None


# --- principals remembered in the process, for cached reads ----------------------------------
#
# The early answer of a cached read (kernel/api/cached_reads.py) reuses the principal this
# process resolved last for the same member, as long as what the snapshot in Redis depends on
# still holds: the tenant's epoch is the one it was built under and the session carries no
# revocation mark. Both are checked on every request, from the process's tracked keys, which
# Redis invalidates as soon as either changes (kernel/tracked.py), or else in the round trip that
# takes the rate limit's tokens; so a change of access is seen by the very next request, as
# with the snapshot itself; and it is forgotten after PRINCIPAL_CACHE_SECONDS, the snapshot's
# own bound.

REMEMBERED_SIZE = 4096
_remembered: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, Resolved]] = {}
_remembered_lock = threading.Lock()


def remember(tenant_id: uuid.UUID, user_id: uuid.UUID, resolved: Resolved) -> None:
    if resolved.principal is None or resolved.epoch is None:
        return
    until = time.monotonic() + settings.PRINCIPAL_CACHE_SECONDS
    with _remembered_lock:
        if len(_remembered) >= REMEMBERED_SIZE:
            _remembered.clear()
        _remembered[(tenant_id, user_id)] = (until, replace(resolved, read_ahead={}))


def remembered(tenant_id: uuid.UUID, user_id: uuid.UUID) -> Resolved | None:
    entry = _remembered.get((tenant_id, user_id))
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def forget(tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    with _remembered_lock:
        _remembered.pop((tenant_id, user_id), None)


def freshness_names(session_id: str) -> tuple[str, str]:
    """The names, in the tenant's cache, of its access epoch and of the session's revocation
    mark: what a remembered principal depends on."""
    return EPOCH_KEY, _revoked_key(session_id)


def still_current(resolved: Resolved, values: Sequence[bytes | None]) -> bool:
    """Whether the raw values of `freshness_names` leave a remembered principal valid."""
    epoch, revoked = values
    return revoked is None and epoch is not None and decoded_token(epoch) == resolved.epoch


def decoded_token(raw: bytes) -> Any:
    """A raw Redis value of a token the cache stored (an epoch, a catalog version), decoded.

    The same few tokens come back on every request until they change, and decoding (the cache's
    serializer) costs more than looking them up: remembered per process by their bytes and the
    cache client that decodes them."""
    return _decoded(cache.client, raw)


@functools.lru_cache(maxsize=1024)
def _decoded(client: Any, raw: bytes) -> Any:
    return client.decode(raw)


def access_changed(tenant_id: uuid.UUID) -> None:
    """Invalidate every cached principal of the tenant, and have its open sockets re-check their
    credentials, once the current transaction commits."""

    def bump() -> None:
        with tenant_context(tenant_id):
            try:
                cache.set(EPOCH_KEY, uuid.uuid4().hex, timeout=None)
            except REDIS_ERRORS:
                # Snapshots expire within PRINCIPAL_CACHE_SECONDS in any case.
                log.warning("principal_cache_unavailable", tenant_id=str(tenant_id))
        for listener in _access_listeners:
            listener(tenant_id)

    transaction.on_commit(bump)


def revoke_session(*, tenant_id: uuid.UUID, session_id: str) -> None:
    """Refuse the access tokens of one sign-in from now on (logout); what holds a connection open
    with them (a WebSocket) is told once the transaction commits."""
    # They live at most ACCESS_TOKEN_LIFETIME: the mark need not outlive them (the refresh token
    # is blacklisted durably in the database).
    timeout = int(settings.ACCESS_TOKEN_LIFETIME.total_seconds()) + 60
    with tenant_context(tenant_id):
        cache.set(_revoked_key(session_id), 1, timeout=timeout)
    for listener in _session_listeners:
        listener(session_id)


# What else must learn at once that access changed: the surfaces that hold connections open (the
# WebSocket server closes or re-checks its sockets). A feature registers its listener from its
# AppConfig.ready(); the kernel calls them after commit (`access_changed`) or with the revocation
# (`revoke_session`, whose listener defers its own work to the commit).
_access_listeners: list[Callable[[uuid.UUID], None]] = []
_session_listeners: list[Callable[[str], None]] = []


def on_access_changed(listener: Callable[[uuid.UUID], None]) -> None:
    """Call `listener(tenant_id)` after each committed change of who may do what in a tenant."""
    if listener not in _access_listeners:
        _access_listeners.append(listener)


def on_session_revoked(listener: Callable[[str], None]) -> None:
    """Call `listener(session_id)` when a sign-in's tokens are revoked (logout)."""
    if listener not in _session_listeners:
        _session_listeners.append(listener)


def _from_database(user_id: uuid.UUID, *, epoch, store: bool) -> Resolved:
    membership = membership_for_principal(user_id=user_id)
    if membership is None:
        return Resolved(principal=None)
    roles = membership_roles(membership=membership)
    snapshot = {
        "epoch": epoch,
        "membership_id": membership.id,
        # Every field of the user that a request reads (the checks, `/auth/me`): a field left out
        # would come back as the model's default, not the row's.
        "user": {field: getattr(membership.user, field) for field in _USER_FIELDS},
        "password_digest": get_md5_hash_password(membership.user.password),
        **tenant_snapshot(membership.tenant),
        "roles": sorted(name for name, _ in roles),
        "permissions": sorted({code for _, codes in roles for code in codes}),
        # Read only where the tenant requires one, the one place it matters: no query otherwise.
        "second_factor": membership.tenant.require_mfa and second_factor.required(membership.user),
    }
    if store:
        try:
            cache.set(_snapshot_key(user_id), snapshot, timeout=settings.PRINCIPAL_CACHE_SECONDS)
        except REDIS_ERRORS:
            log.warning("principal_cache_unavailable")
    return _from_snapshot(snapshot)


def _from_snapshot(snapshot: dict) -> Resolved:
    """Model instances rebuilt from the snapshot, without a query: read them, never save them."""
    tenant = tenant_from_snapshot(snapshot)
    user = get_user_model()(**snapshot["user"])
    membership = Membership(id=snapshot["membership_id"], tenant=tenant, user=user)
    principal = Principal(
        tenant=tenant,
        user=user,
        membership=membership,
        roles=frozenset(snapshot["roles"]),
        permissions=frozenset(snapshot["permissions"]),
        second_factor=snapshot["second_factor"],
    )
    return Resolved(
        principal=principal, password_digest=snapshot["password_digest"], epoch=snapshot["epoch"]
    )
