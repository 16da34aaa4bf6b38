"""Users and API keys in the operators' admin.

A user signs in with an email address: there is no username. Every change to a user (the
form, the password form, deleting) goes through `accounts.services`, which records it in the
platform's audit log, and in the tenants of the person where it concerns them (a deactivation
ends their sessions there at once). API keys are read-only (their
secret is nowhere to be seen, not even hashed); an operator can revoke them, through the same
service as the API, which records the revocation with the operator as the actor.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, AdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from accounts import services
from accounts.models import ApiKey
from accounts.tenant_admin import ReadOnlyAdminMixin

User = get_user_model()


class UserCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email", "name")

    def clean_email(self) -> str:
        # Stored lower-cased; compare that way, so that a duplicate is a form error, not a 500.
        email = User.objects.normalize_email(self.cleaned_data["email"])
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("A user with this email exists.")
        return email


class UserChangeForm(DjangoUserChangeForm):
    class Meta(DjangoUserChangeForm.Meta):
        model = User
        fields = "__all__"


class PasswordChangeForm(AdminPasswordChangeForm):
    def save(self, commit=True):
        # The new password (or none) through the service that records it, never its value.
        user = self.set_password_and_save(self.user, commit=False)
        if commit:
            services.user_operator_save(user=user)
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = PasswordChangeForm
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_superuser", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "name", "usable_password", "password1", "password2"),
            },
        ),
    )

    def save_model(self, request, obj, form, change):
        # Groups and permissions with the user, so that the service records them in the same
        # event; the form's own save of them, in save_related, then finds nothing to change.
        services.user_operator_save(
            user=obj,
            groups=form.cleaned_data.get("groups"),
            user_permissions=form.cleaned_data.get("user_permissions"),
        )

    def delete_model(self, request, obj):
        services.user_delete(user=obj)

    def delete_queryset(self, request, queryset):
        # The bulk action too: one service call, and so its events, per user.
        for user in queryset:
            services.user_delete(user=user)

    def user_change_password(self, request, id, form_url=""):
        # Django's view is not atomic: the password, its events and the admin's own log entry
        # commit together.
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    def save_model(self, request, obj, form, change):
        # The permissions with the group, so that the service records them in the same event;
        # the form's own save of them, in save_related, then finds nothing to change.
        services.group_operator_save(group=obj, permissions=form.cleaned_data.get("permissions"))

    def delete_model(self, request, obj):
        services.group_delete(group=obj)

    def delete_queryset(self, request, queryset):
        # The bulk action too: one service call, and so one event, per group.
        for group in queryset:
            services.group_delete(group=group)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "tenant",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix", "tenant__slug"]
    list_select_related = ["tenant"]
    # The hash is of no use to anyone reading, and is a secret's stand-in: leave it out.
    exclude = ["key_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.select_related("tenant").filter(revoked_at__isnull=True):
            services.api_key_revoke(tenant=api_key.tenant, api_key=api_key)
            revoked += 1
        self.message_user(request, f"{revoked} API key(s) revoked.", messages.SUCCESS)


class BlacklistedTokenAdminWithoutAdd(BlacklistedTokenAdmin):
    """Refresh tokens are blacklisted by logouts and rotations, never by hand: no "Add"."""

    def has_add_permission(self, request) -> bool:
        return False


admin.site.unregister(BlacklistedToken)
admin.site.register(BlacklistedToken, BlacklistedTokenAdminWithoutAdd)
