"""Third-party apps and their tokens in the operators' admin (named in OAUTH2_PROVIDER's
*_ADMIN_CLASS settings: django-oauth-toolkit registers them).

Operators see every tenant's apps and can delete one, through the same service as the API (its
tokens everywhere are revoked with it, and the tenant's audit log records it, the operator as the
actor). Nothing here creates or edits an app or a token: apps are the tenants' own, registered
through the API, and tokens are issued by the protocol alone. A token can be deleted: revoked.
"""

from django.contrib import admin
from oauth2_provider import admin as dot_admin

from oauth import services
from oauth.models import App, Consent


class NoAddOrChangeMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ConsentInline(NoAddOrChangeMixin, admin.TabularInline):
    model = Consent
    fields = ["tenant", "user", "scopes", "created_at"]
    readonly_fields = fields
    extra = 0

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AppAdmin(NoAddOrChangeMixin, admin.ModelAdmin):
    list_display = ["name", "tenant", "client_id", "client_type", "created"]
    list_filter = ["client_type"]
    search_fields = ["name", "client_id", "tenant__slug"]
    list_select_related = ["tenant"]
    fields = ["name", "tenant", "client_id", "client_type", "redirect_uris", "scopes", "created"]
    readonly_fields = fields
    inlines = [ConsentInline]

    def get_deleted_objects(self, objs, request):
        # The app's tokens go with it through the service, which revokes them properly: the
        # token admin's refusal of raw deletes is not a reason to keep the app.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def delete_model(self, request, obj: App) -> None:
        services.app_delete(tenant=obj.tenant, app=obj)

    def delete_queryset(self, request, queryset) -> None:
        for app in queryset.select_related("tenant"):
            services.app_delete(tenant=app.tenant, app=app)


class AccessTokenAdmin(NoAddOrChangeMixin, dot_admin.AccessTokenAdmin):
    pass


class RefreshTokenAdmin(NoAddOrChangeMixin, dot_admin.RefreshTokenAdmin):
    pass


class GrantAdmin(NoAddOrChangeMixin, dot_admin.GrantAdmin):
    pass


class IDTokenAdmin(NoAddOrChangeMixin, dot_admin.IDTokenAdmin):
    pass
