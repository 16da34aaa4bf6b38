"""The operators' view of tenants, plans, memberships, roles, invitations and the audit log.

Every view here runs in operator scope (kernel/admin_site.py), so the changelists show every
tenant's rows. Tenant data (memberships, roles, invitations) is read-only: its writes carry
rules (grant only what you hold, keep an owner) that live in the services and the API, not in
forms. Operators change tenants (status, plan, name) and plans; each change of a tenant, in the
form or through an action, goes through a service that records its audit event with the
operator as the actor; a plan's, which belongs to no tenant, goes to the platform's audit log.
Both logs are read-only here as everywhere. So are the jobs of every tenant: operators follow
them here, and fetch a succeeded export (one they started for a person from the user admin, say)
by its signed link.
"""

import datetime

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from kernel import tenants as services
from kernel.exports import services as exports
from kernel.models import Job
from kernel.tenancy.models import (
    AuditEvent,
    Invitation,
    Membership,
    Plan,
    PlatformAuditEvent,
    Role,
    Tenant,
)


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def role_names(membership: Membership) -> str:
    return ", ".join(sorted(role.name for role in membership.roles.all()))


class MembershipInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Membership
    fields = ["user", "roles_held", "created_at"]
    readonly_fields = fields
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").prefetch_related("roles")

    @admin.display(description="roles")
    def roles_held(self, membership: Membership) -> str:
        return role_names(membership)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "plan", "created_at", "deleted_at"]
    list_filter = ["status", "plan"]
    search_fields = ["name", "slug"]
    list_select_related = ["plan"]
    # The retentions the tenant chose (kernel/retention.py) are its owner's to set, through the
    # API; shown here beside the plan that bounds them.
    readonly_fields = [
        "id",
        "audit_retention_days",
        "notification_retention_days",
        "created_at",
        "deleted_at",
    ]
    fields = [
        "id",
        "name",
        "slug",
        "status",
        "plan",
        "settings",
        "audit_retention_days",
        "notification_retention_days",
        "created_at",
        "deleted_at",
    ]
    inlines = [MembershipInline]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "plan" and formfield is not None:
            # A plan is deleted from its own page, where what depends on it is shown; not from
            # a tenant's form, where the icon would offer to delete the plan of many tenants.
            formfield.widget.can_delete_related = False
        return formfield

    actions = ["suspend", "reactivate"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # A tenant is deleted by its owner through the API: soft delete first, so that every
        # session ends at once, then the purge. A hard delete here would skip both.
        return False

    def save_model(self, request, obj, form, change):
        # The service saves, records the audit events and invalidates the tenant's cached
        # principals: a suspension made in this form bites on the next request, as one made
        # with the action does.
        services.tenant_operator_save(tenant=obj, changed_fields=form.changed_data)

    @admin.action(description="Suspend")
    def suspend(self, request, queryset):
        changed = services.tenant_set_status(
            tenant_ids=queryset.values_list("pk", flat=True), status=Tenant.Status.SUSPENDED
        )
        self.message_user(request, f"{changed} tenant(s) suspended.", messages.SUCCESS)

    @admin.action(description="Reactivate")
    def reactivate(self, request, queryset):
        changed = services.tenant_set_status(
            tenant_ids=queryset.values_list("pk", flat=True), status=Tenant.Status.ACTIVE
        )
        self.message_user(request, f"{changed} tenant(s) reactivated.", messages.SUCCESS)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "requests_per_minute",
        "burst",
        "max_members",
        "max_api_keys",
        "max_products",
        "max_invitations_per_day",
        "audit_retention_days",
        "notification_retention_days",
    ]
    search_fields = ["code", "name"]

    def save_model(self, request, obj, form, change):
        # The service records the change in the platform's audit log and refreshes the cached
        # principals of the plan's tenants, which hold its limits.
        services.plan_operator_save(plan=obj)

    def delete_model(self, request, obj):
        services.plan_delete(plan=obj)

    def delete_queryset(self, request, queryset):
        # The bulk action too: one service call, and so one event, per plan.
        for plan in queryset:
            services.plan_delete(plan=plan)


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "tenant", "roles_held", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["user__email", "tenant__slug", "tenant__name"]
    list_select_related = ["user", "tenant"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    @admin.display(description="roles")
    def roles_held(self, membership: Membership) -> str:
        return role_names(membership)


@admin.register(Role)
class RoleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["name", "tenant", "is_builtin", "permissions", "updated_at"]
    list_filter = ["tenant", "is_builtin"]
    search_fields = ["name", "tenant__slug"]
    list_select_related = ["tenant"]


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["email", "tenant", "status", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["tenant"]
    search_fields = ["email", "tenant__slug"]
    list_select_related = ["tenant"]
    # The token's hash is of no use to anyone reading: leave it out.
    exclude = ["token_hash"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: no add, change or delete, and so no delete action either."""

    list_display = ["created_at", "tenant", "action", "actor_type", "actor", "target_type"]
    list_filter = ["actor_type", "tenant"]
    search_fields = [
        "action",
        "actor_label",
        "actor_app_label",
        "target_id",
        "request_id",
        "tenant__slug",
    ]
    list_select_related = ["tenant"]
    show_full_result_count = False

    @admin.display(description="actor", ordering="actor_label")
    def actor(self, event: AuditEvent) -> str:
        if event.actor_app_label:
            # A person acting through a third-party app: both are named.
            return short_with_title(f"{event.actor_label} via {event.actor_app_label}")
        return short_with_title(event.actor_label)


@admin.register(PlatformAuditEvent)
class PlatformAuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Operators' changes to plans and users: read and filter, never add, change or delete."""

    list_display = ["created_at", "action", "actor_type", "actor", "target_type", "target_id"]
    list_filter = ["actor_type", "target_type", "action"]
    search_fields = ["action", "actor_label", "target_id", "request_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="actor", ordering="actor_label")
    def actor(self, event: PlatformAuditEvent) -> str:
        return short_with_title(event.actor_label)


@admin.register(Job)
class JobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every tenant's jobs, read-only: started by the API (and, for a person's export, by the
    user admin's action), run by workers, never edited by hand. A succeeded export shows its
    signed link while its archive is there."""

    list_display = ["kind", "status", "tenant", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    search_fields = ["tenant__slug", "tenant__name"]
    list_select_related = ["tenant"]
    show_full_result_count = False
    fields = [
        "id",
        "kind",
        "status",
        "tenant",
        "created_by_user_id",
        "created_by_api_key_id",
        "created_at",
        "started_at",
        "finished_at",
        "total",
        "processed",
        "succeeded",
        "failed",
        "detail",
        "errors",
        "errors_omitted",
        "result",
    ]
    readonly_fields = fields

    # The link is absolute, made from the request the page answers: a column made for each
    # request rather than a method reading a request kept on this admin, which every thread
    # shares. (Every view here is read-only, so Django shows every field, this one too, as text.)
    def get_list_display(self, request):
        return [*super().get_list_display(request), download_column(request)]

    def get_fields(self, request, obj=None):
        return [*super().get_fields(request, obj), download_column(request)]


def download_column(request):
    @admin.display(description="download")
    def download(job: Job) -> str:
        # The link opens the archive to whoever holds it, without a credential: shown to
        # operators, who read every tenant's data here anyway.
        url = exports.download_url(job, request)
        if url is None:
            return "—"
        if datetime.datetime.fromisoformat(job.result["expires_at"]) <= timezone.now():
            return "expired"
        return format_html('<a href="{}">archive</a> (until {})', url, job.result["expires_at"])

    return download


ACTOR_SHOWN = 40


def short_with_title(label: str) -> str:
    """A label of at most ACTOR_SHOWN characters in a list's column, the whole of it on hover:
    a long one (an operator's email and agent) would widen the column past the page."""
    if len(label) <= ACTOR_SHOWN:
        return label
    return format_html('<span title="{}">{}…</span>', label, label[: ACTOR_SHOWN - 1])
