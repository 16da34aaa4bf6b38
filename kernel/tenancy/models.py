"""Tenants, and the base every tenant-owned model stands on.

Every tenant-owned table carries `tenant_id`, and every uniqueness of one includes it but for
Django's surrogate primary key and the few global ones that must hold across tenants, each
justified (tests/scale/test_citus_readiness.py, docs/scale-out.md): what distributing the tables
by tenant id would need (see docs/tenancy.md).
"""

import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from kernel.context import current_scope, require_tenant_id

# The shortest retentions a plan or a tenant may set (docs/audit.md, "Retention"). A week of audit
# events: the verification job walks every chain whole at least once a day, so each event is
# checked several times, against the chain around it, before it may go; and a week leaves an
# incident noticed after a weekend its trail. Notifications are the tenant's inbox, nothing more.
MIN_AUDIT_RETENTION_DAYS = 7
MIN_NOTIFICATION_RETENTION_DAYS = 1


class CrossTenantWrite(RuntimeError):
    """A tenant-owned row was about to be written under another tenant's context."""


class Plan(models.Model):
    """A commercial plan: rate limits and quotas, as data that operators edit in the admin."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    requests_per_minute = models.PositiveIntegerField(default=600)
    burst = models.PositiveIntegerField(default=100)
    max_members = models.PositiveIntegerField(default=5)
    max_api_keys = models.PositiveIntegerField(default=2)
    max_products = models.PositiveIntegerField(default=1000)
    # Invitations sent in any 24 hours, whatever became of them: each is an email of ours that a
    # tenant addresses (the invitee's address is the tenant's choice).
    max_invitations_per_day = models.PositiveIntegerField(default=20)
    max_oauth_apps = models.PositiveIntegerField(default=2)
    # How long a tenant's audit events and notifications are kept, in days (kernel/retention.py):
    # the most a tenant on the plan may keep, and what it keeps unless it chose less.
    audit_retention_days = models.PositiveIntegerField(
        default=365, validators=[MinValueValidator(MIN_AUDIT_RETENTION_DAYS)]
    )
    notification_retention_days = models.PositiveIntegerField(
        default=90, validators=[MinValueValidator(MIN_NOTIFICATION_RETENTION_DAYS)]
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(audit_retention_days__gte=MIN_AUDIT_RETENTION_DAYS),
                name="plan_audit_retention_min",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    notification_retention_days__gte=MIN_NOTIFICATION_RETENTION_DAYS
                ),
                name="plan_notification_retention_min",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TenantQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status=Tenant.Status.ACTIVE, deleted_at__isnull=True)


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    settings = models.JSONField(default=dict, blank=True)
    # Members who sign in with a password must have a second factor (docs/security.md): set by
    # the owner; until they set one up, they may only do that.
    require_mfa = models.BooleanField(default=False)
    # Shorter retentions than the plan's, chosen by the tenant; null keeps the plan's. The plan's
    # always bounds them (`audit_retention`): a move to a smaller plan shortens them too.
    audit_retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(MIN_AUDIT_RETENTION_DAYS)]
    )
    notification_retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(MIN_NOTIFICATION_RETENTION_DAYS)]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(audit_retention_days__gte=MIN_AUDIT_RETENTION_DAYS),
                name="tenant_audit_retention_min",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    notification_retention_days__gte=MIN_NOTIFICATION_RETENTION_DAYS
                ),
                name="tenant_notification_retention_min",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE and self.deleted_at is None

    @property
    def audit_retention(self) -> int:
        """The days the tenant's audit events are kept: its own choice, bounded by its plan."""
        return _effective(self.audit_retention_days, self.plan.audit_retention_days)

    @property
    def notification_retention(self) -> int:
        """The days the tenant's notifications are kept: its own choice, bounded by its plan."""
        return _effective(self.notification_retention_days, self.plan.notification_retention_days)


def _effective(chosen: int | None, plan_limit: int) -> int:
    # kernel/retention.py computes the same in SQL for the prune jobs.
    return plan_limit if chosen is None else min(chosen, plan_limit)


class TenantScopedQuerySet(models.QuerySet):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            obj.assign_tenant_from_context()
        return super().bulk_create(objs, *args, **kwargs)


class TenantScopedManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    """Filters every query to the tenant in context, and fails closed when there is none.

    The only way to read across tenants is `operator_scope()`, which row-level security honours
    too, so one explicit, greppable line opens both layers.
    """

    def get_queryset(self):
        queryset = super().get_queryset()
        scope = current_scope()
        if scope.operator:
            return queryset
        return queryset.filter(tenant_id=require_tenant_id())


class TenantOwnedModel(models.Model):
    """Base of every tenant-owned model: scoped queries, and a tenant set only from the context."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, editable=False, related_name="+")

    objects = TenantScopedManager()

    class Meta:
        abstract = True
        # Related-object access (product.category) goes through the base manager: scope it too.
        base_manager_name = "objects"

    def save(self, *args, **kwargs):
        self.assign_tenant_from_context()
        super().save(*args, **kwargs)

    def assign_tenant_from_context(self) -> None:
        scope = current_scope()
        if self.tenant_id is None:
            # In operator scope the caller names the tenant explicitly; otherwise it comes from
            # the context and nowhere else.
            self.tenant_id = require_tenant_id()
        elif not scope.operator and self.tenant_id != require_tenant_id():
            raise CrossTenantWrite(
                f"{type(self).__name__} of tenant {self.tenant_id} written under another tenant."
            )


class Permission(models.Model):
    """A permission code (`catalog.write`), as data: roles are sets of these."""

    code = models.CharField(max_length=64, primary_key=True)
    description = models.CharField(max_length=255)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Role(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=255, blank=True)
    # Permission codes; validated against Permission by the services that write roles.
    permissions = models.JSONField(default=list)
    is_builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint("tenant", Lower("name"), name="role_name_unique_per_tenant"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    roles = models.ManyToManyField(Role, through="MembershipRole", related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_per_tenant"),
        ]

    def __str__(self) -> str:
        # The member's email when the user is at hand (the admin's inline loads it), never a
        # query of its own; ids otherwise.
        if "user" in self._state.fields_cache:
            return self.user.email
        return f"{self.user_id}@{self.tenant_id}"


class MembershipRole(TenantOwnedModel):
    """The roles of a membership; a table of its own so that it carries tenant_id too."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE)
    role = models.ForeignKey(Role, on_delete=models.CASCADE)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "membership", "role"], name="membership_role_unique_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.membership_id}:{self.role_id}"


class InvitationQuerySet(TenantScopedQuerySet):
    def pending(self):
        """Neither accepted nor revoked; may still have expired (see `live`)."""
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True)

    def live(self):
        """Pending and not expired: the invitations that can still be accepted."""
        return self.pending().filter(expires_at__gt=timezone.now())


class Invitation(TenantOwnedModel):
    """An email address asked to join the tenant with some roles.

    Only the SHA-256 of the token is stored: whoever reads this table cannot accept anything.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REVOKED = "revoked"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Stored lower-cased, as User.email is.
    email = models.EmailField(max_length=254)
    roles = models.ManyToManyField(Role, through="InvitationRole", related_name="invitations")
    token_hash = models.CharField(max_length=64, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager.from_queryset(InvitationQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["token_hash"], name="invitation_token_hash_idx")]
        constraints = [
            # One pending invitation per address and tenant. Expiry cannot be part of the
            # condition (now() is not immutable): inviting again replaces an expired one.
            models.UniqueConstraint(
                "tenant",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_pending_email_unique_per_tenant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email}@{self.tenant_id}"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return self.Status.ACCEPTED
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.PENDING


class InvitationRole(TenantOwnedModel):
    """The roles an invitation grants; carries tenant_id like every table of tenant data."""

    invitation = models.ForeignKey(Invitation, on_delete=models.CASCADE)
    role = models.ForeignKey(Role, on_delete=models.CASCADE)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "invitation", "role"], name="invitation_role_unique_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invitation_id}:{self.role_id}"


class AuditLogIsAppendOnly(RuntimeError):
    """An audit event was about to be changed or deleted: the log only ever grows."""


class AppendOnlyQuerySetMixin:
    """Reads only: bulk changes and deletes are refused like those of a single event.

    The one way events leave their table is the retention prune (and, for a tenant's log, the
    purge of a deleted tenant), through the database functions the migrations create
    (kernel/audit.py).
    """

    def update(self, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be updated.")

    def delete(self):
        raise AuditLogIsAppendOnly("Audit events cannot be deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AuditLogIsAppendOnly("Audit events cannot be updated.")

    def update_or_create(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be updated.")


class AuditEventQuerySet(AppendOnlyQuerySetMixin, TenantScopedQuerySet):
    pass


class PlatformAuditEventQuerySet(AppendOnlyQuerySetMixin, models.QuerySet):
    pass


class AuditActorType(models.TextChoices):
    USER = "user"
    API_KEY = "api_key", "API key"
    OPERATOR = "operator"
    SYSTEM = "system"


class AuditRecord(models.Model):
    """What every audit event says, in a tenant's log or in the platform's. Append-only."""

    ActorType = AuditActorType

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    # The user's or the API key's id; none for the system.
    actor_id = models.UUIDField(null=True, blank=True)
    # The actor as people know it at the time: an email, or an API key's name.
    actor_label = models.CharField(max_length=254, blank=True)
    # The third-party app a person acted through (an OAuth token), beside the person.
    actor_app_id = models.UUIDField(null=True, blank=True)
    actor_app_label = models.CharField(max_length=200, blank=True)
    # `<app>.<entity>.<verb>`: tenants.member.removed, accounts.api_key.created, ...
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    # {field: [old, new]}, with secrets replaced by a marker before they get here.
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    # Not auto_now_add: the retention job and its tests need to name the time.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogIsAppendOnly("Audit events cannot be updated.")
        kwargs["force_insert"] = True
        kwargs.pop("force_update", None)
        kwargs.pop("update_fields", None)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be deleted.")


class AuditEvent(TenantOwnedModel, AuditRecord):
    """Who did what to which object of a tenant, when and from where. Append-only.

    Written by `kernel.audit.record()` in the transaction of the change it describes. Besides
    the refusals here, a PostgreSQL trigger refuses UPDATE and DELETE on the table for anyone
    but the retention functions (migration 0004, docs/audit.md).
    """

    # The tenant's hash chain (kernel/audit_chain.py): SHA-256 of this event's canonical JSON
    # followed by the previous event's hash, which is `prev_hash` (64 zeros for the first).
    # Public by design: whoever holds a copy of the log can check it with them.
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    objects = TenantScopedManager.from_queryset(AuditEventQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        ordering = ["-created_at"]
        indexes = [
            # The list, newest first, and the since/until range.
            models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created_idx"),
            models.Index(fields=["tenant", "actor_id", "-created_at"], name="audit_actor_idx"),
            models.Index(
                fields=["tenant", "target_type", "target_id", "-created_at"],
                name="audit_target_idx",
            ),
            # Pattern operators, so that the prefix filter (`tenants.member.*`, a LIKE) can use
            # the index whatever the database's collation.
            models.Index(
                fields=["tenant", "action"],
                name="audit_action_idx",
                opclasses=["uuid_ops", "varchar_pattern_ops"],
            ),
            # The retention job, across tenants.
            models.Index(fields=["created_at"], name="audit_created_idx"),
        ]


class AuditChainHead(TenantOwnedModel):
    """Where a tenant's audit hash chain ends, and where it starts once old events are pruned.

    One row per tenant, locked (`SELECT … FOR UPDATE`) by every event appended to the chain, so
    that concurrent writers of one tenant line up instead of forking it (kernel/audit_chain.py).
    Unlike the events it is updated in place: it is a cursor over the log, not part of it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The last event of the chain: its hash, id and time (the next event's created_at is later).
    hash = models.CharField(max_length=64)
    event_id = models.UUIDField(null=True, blank=True)
    event_created_at = models.DateTimeField(null=True, blank=True)
    # The last event pruned (docs/audit.md, "Pruning"): verification starts after it, from its
    # hash. 64 zeros and no event while nothing was pruned.
    anchor_hash = models.CharField(max_length=64)
    anchor_event_id = models.UUIDField(null=True, blank=True)
    anchor_created_at = models.DateTimeField(null=True, blank=True)
    # Whether each event appended is also published as an `audit.event` domain event (docs/
    # audit.md, "Streaming to a SIEM"): on while some webhook endpoint of the tenant takes that
    # topic. Kept here because every append reads this row under its lock anyway: a tenant that
    # streams nothing pays no query for the check, and a change of subscription takes the same
    # lock, so no event appended after it commits is missed.
    streamed = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedManager()

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="audit_chain_head_tenant_unique")
        ]

    def __str__(self) -> str:
        return f"audit chain head {self.hash[:12]}"


class PlatformAuditEvent(AuditRecord):
    """What operators (and the system) did to objects that belong to no tenant: plans, users.

    The platform's own log, beside the tenants' ones: no tenant_id, no row-level security, read
    by operators in the admin only. Written by `kernel.audit.record_platform()` in the
    transaction of the change; append-only like AuditEvent, a trigger included (migration 0005).
    A change that also touches tenants (a member deactivated) is recorded in their logs too.
    """

    objects = PlatformAuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "platform audit event"
        indexes = [
            # The list, newest first, the since/until range and the retention job.
            models.Index(fields=["-created_at"], name="platform_audit_created_idx"),
            models.Index(fields=["actor_id", "-created_at"], name="platform_audit_actor_idx"),
            models.Index(
                fields=["target_type", "target_id", "-created_at"],
                name="platform_audit_target_idx",
            ),
        ]
